"""Generate the inputs of repeated_reference.R (run once; the CSVs are stored).

Usage: python make_repeated_input.py

- ``repeated_input.csv``: 30 participants with 1-4 sessions (microbleed counts over
  time with a participant frailty, so the sessions of a participant are correlated),
  covariates, time since the first session in years and the brain fraction covered.
- ``rate_input.csv``: the intervals between consecutive sessions with their new
  lesions (``n_new``) and length in years.
- ``separation_input.csv``: 24 participants; no control has a microbleed (group
  separates), and ``dose`` separates in part.
"""
import numpy as np
import pandas as pd

rng = np.random.default_rng(15)
n = 30
age = np.round(rng.normal(55, 12, n))
sex = rng.choice(["F", "M"], n)
group = np.where(np.arange(n) < 20, "itp", "control")
frailty = rng.gamma(2.0, 0.5, n)
rows, intervals = [], []
for i in range(n):
    n_sessions = int(rng.integers(1, 5))
    years = np.concatenate([[0.0], np.cumsum(np.round(rng.uniform(0.5, 2.0, n_sessions - 1), 2))])
    coverage = np.round(np.where(rng.uniform(size=n_sessions) < 0.25,
                                 rng.uniform(0.8, 0.97, n_sessions), 1.0), 3)
    base = np.exp(0.2 + 0.02 * (age[i] - 55) + 0.3 * (sex[i] == "M")
                  - 0.8 * (group[i] == "control")) * frailty[i]
    counts = rng.poisson(base * np.exp(0.25 * years) * coverage)
    for k in range(n_sessions):
        rows.append(dict(participant_id=f"sub-{i + 1:02d}", session_id=f"ses-{k + 1}",
                         years=years[k], age=age[i], sex=sex[i], group=group[i],
                         n_cmb=counts[k], coverage=coverage[k]))
        if k:
            length = years[k] - years[k - 1]
            intervals.append(dict(participant_id=f"sub-{i + 1:02d}", session_id=f"ses-{k + 1}",
                                  interval_years=round(length, 2), age=age[i], sex=sex[i],
                                  group=group[i],
                                  n_new=rng.poisson(0.4 * base * length)))
pd.DataFrame(rows).to_csv("repeated_input.csv", index=False)
pd.DataFrame(intervals).to_csv("rate_input.csv", index=False)

m = 24
sep = pd.DataFrame(dict(participant_id=[f"sub-{i + 1:02d}" for i in range(m)],
                        group=np.where(np.arange(m) < 14, "itp", "control"),
                        age=np.round(rng.normal(50, 10, m)),
                        dose=np.round(rng.uniform(0, 10, m), 1)))
mu = np.exp(-0.5 + 0.03 * (sep["age"] - 50) + 0.15 * sep["dose"])
sep["n_cmb"] = np.where(sep["group"] == "itp", rng.poisson(mu), 0)
sep.loc[sep["dose"] < 2, "n_cmb"] = 0
sep.to_csv("separation_input.csv", index=False)
print(pd.DataFrame(rows).groupby("participant_id").size().value_counts().sort_index())
print(sep.groupby("group")["n_cmb"].sum(), pd.DataFrame(intervals)["n_new"].describe())

"""Generate poisson_input.csv (run once; the CSV is stored). Usage: python make_poisson_input.py"""
import numpy as np
import pandas as pd

rng = np.random.default_rng(2026)
n = 60
age = np.round(rng.normal(55, 15, n), 0)
sex = rng.choice(["F", "M"], n)
plt_nadir = np.round(rng.gamma(2.0, 8.0, n), 1)
smog = rng.integers(0, 5, n)
group = np.where(np.arange(n) < 45, "itp", "control")
mu = np.exp(0.3 + 0.03 * (age - 55) + 0.4 * (sex == "M") - 0.05 * plt_nadir + 0.3 * smog)
mu = np.where(group == "control", mu * 0.3, mu)
frail = rng.gamma(1.5, 1 / 1.5, n)  # gamma frailty: overdispersed counts
y = rng.poisson(mu * frail)
d = pd.DataFrame(dict(participant_id=[f"sub-{i:02d}" for i in range(1, n + 1)], group=group,
                      n_cmb=y, age=age, sex=sex, platelet_nadir=plt_nadir, smog=smog))
d.loc[[3, 17, 50], "platelet_nadir"] = np.nan
d.loc[[8], "age"] = np.nan
d.to_csv("poisson_input.csv", index=False, na_rep="NA")
print(d.n_cmb.describe(), (d.n_cmb > 0).mean())

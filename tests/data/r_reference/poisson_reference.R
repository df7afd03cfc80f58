# Reference numbers for cmbprep's group statistics (tests/test_stats_r_reference.py).
# Run from this folder:  Rscript poisson_reference.R
# Writes poisson_reference.csv (glm poisson and MASS::glm.nb coefficients and SEs) and
# prevalence_reference.csv (binom.test Clopper-Pearson CIs, prop.trend.test, fisher.test).
# Made with R 4.2.2 (Debian r-base-core) and MASS 7.3.
suppressPackageStartupMessages(library(MASS))
d <- read.csv("poisson_input.csv", stringsAsFactors = FALSE)
d$sex <- factor(d$sex, levels = c("F", "M"))
d$group <- factor(d$group, levels = c("control", "itp"))

formulas <- c(
  "n_cmb ~ age",
  "n_cmb ~ sex",
  "n_cmb ~ platelet_nadir",
  "n_cmb ~ group",
  "n_cmb ~ I(smog >= 2)",
  "n_cmb ~ age + sex + platelet_nadir",
  "n_cmb ~ age + sex + platelet_nadir + I(smog >= 2) + group"
)
ctl <- glm.control(epsilon = 1e-14, maxit = 200)
rows <- list()
for (f in formulas) {
  fit <- glm(as.formula(f), data = d, family = poisson(), control = ctl)
  co <- summary(fit)$coefficients
  disp <- sum(residuals(fit, type = "pearson")^2) / fit$df.residual
  rows[[length(rows) + 1]] <- data.frame(
    formula = f, family = "poisson", term = rownames(co), coef = co[, 1], se = co[, 2],
    p_value = co[, 4], n_used = nobs(fit), deviance = deviance(fit),
    dispersion = disp, aic = AIC(fit), theta = NA)
  nb <- glm.nb(as.formula(f), data = d, control = glm.control(epsilon = 1e-12, maxit = 500))
  co <- summary(nb)$coefficients
  rows[[length(rows) + 1]] <- data.frame(
    formula = f, family = "negative_binomial", term = rownames(co), coef = co[, 1],
    se = co[, 2], p_value = co[, 4], n_used = nobs(nb), deviance = deviance(nb),
    dispersion = NA, aic = AIC(nb), theta = nb$theta)
}
out <- do.call(rbind, rows)
write.csv(out, "poisson_reference.csv", row.names = FALSE)

# Prevalence: the ITP study's platelet-nadir bins and groups (Blood 2020;136:2875).
x <- c(0, 2, 4, 15); n <- c(4, 9, 11, 25)
prev <- list()
for (i in seq_along(x)) {
  b <- binom.test(x[i], n[i])
  prev[[i]] <- data.frame(what = "binom", n_with = x[i], n_total = n[i],
                          ci_lower = b$conf.int[1], ci_upper = b$conf.int[2],
                          statistic = NA, p_value = b$p.value)
}
b <- binom.test(21, 49)
prev[[5]] <- data.frame(what = "binom", n_with = 21, n_total = 49, ci_lower = b$conf.int[1],
                        ci_upper = b$conf.int[2], statistic = NA, p_value = b$p.value)
b <- binom.test(0, 18)
prev[[6]] <- data.frame(what = "binom", n_with = 0, n_total = 18, ci_lower = b$conf.int[1],
                        ci_upper = b$conf.int[2], statistic = NA, p_value = b$p.value)
tr <- prop.trend.test(x, n)
prev[[7]] <- data.frame(what = "prop.trend.test", n_with = NA, n_total = NA, ci_lower = NA,
                        ci_upper = NA, statistic = unname(tr$statistic), p_value = tr$p.value)
tr <- prop.trend.test(x, n, score = c(2.5, 7.5, 12.5, 30))
prev[[8]] <- data.frame(what = "prop.trend.test.scores", n_with = NA, n_total = NA,
                        ci_lower = NA, ci_upper = NA, statistic = unname(tr$statistic),
                        p_value = tr$p.value)
fi <- fisher.test(matrix(c(21, 28, 0, 18), nrow = 2, byrow = TRUE))
prev[[9]] <- data.frame(what = "fisher.test", n_with = NA, n_total = NA, ci_lower = NA,
                        ci_upper = NA, statistic = NA, p_value = fi$p.value)
ch <- chisq.test(matrix(c(0, 4, 2, 7, 4, 7, 15, 10), ncol = 2, byrow = TRUE), correct = FALSE)
prev[[10]] <- data.frame(what = "chisq.test", n_with = NA, n_total = NA, ci_lower = NA,
                         ci_upper = NA, statistic = unname(ch$statistic), p_value = ch$p.value)
write.csv(do.call(rbind, prev), "prevalence_reference.csv", row.names = FALSE)

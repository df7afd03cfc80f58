# Reference numbers for cmbprep's repeated-measures, rate and sparse-data models
# (tests/test_stats_repeated.py). Run from this folder:  Rscript repeated_reference.R
# Inputs (made by make_repeated_input.py): repeated_input.csv, rate_input.csv,
# separation_input.csv. Writes repeated_reference.csv, one row per coefficient:
#   gee        geepack::geeglm(family = poisson, corstr = "exchangeable"), robust
#              (sandwich) SEs, id = participant, with and without offset(log(coverage))
#   rate       glm(family = poisson) and MASS::glm.nb of new lesions per interval with
#              offset(log(interval_years))
#   firth      glm(method = brglm2::brglmFit, type = "AS_mean") (bias-reduced Poisson)
#   profile    profile-likelihood 95% intervals of glm(family = poisson): confint()
#              (MASS:::confint.glm) for the rate model; under separation confint() fails
#              ("no valid set of coefficients"), so the bounds are solved with uniroot()
#              on the deviance of glm() refits with the coefficient fixed (offset), and
#              a bound that does not exist (the likelihood never drops enough) is NA;
#              profile_uniroot: the same solver on the rate model (confint() interpolates
#              a spline through profile points, uniroot() solves for the bound)
# Made with R 4.2.2 Patched (Debian r-base-core 4.2.2), geepack 1.3.9, brglm2 0.9,
# MASS 7.3-58.2 (Debian packages r-cran-geepack, r-cran-brglm2, r-cran-mass).
suppressPackageStartupMessages({library(MASS); library(geepack); library(brglm2)})

factors <- function(d) {
  d$sex <- factor(d$sex, levels = c("F", "M"))
  d$group <- factor(d$group, levels = c("control", "itp"))
  d
}
rep_d <- factors(read.csv("repeated_input.csv", stringsAsFactors = FALSE))
rep_d <- rep_d[order(rep_d$participant_id, rep_d$session_id), ]
rep_d$id <- as.integer(factor(rep_d$participant_id))
rate_d <- factors(read.csv("rate_input.csv", stringsAsFactors = FALSE))
sep_d <- read.csv("separation_input.csv", stringsAsFactors = FALSE)
sep_d$group <- factor(sep_d$group, levels = c("control", "itp"))

rows <- list()
add <- function(case, method, formula, term, coef, se, p, lower = NA, upper = NA,
                extra = NA, n_used = NA, deviance = NA) {
  rows[[length(rows) + 1]] <<- data.frame(
    case = case, method = method, formula = formula, term = term, coef = coef, se = se,
    p_value = p, ci_lower = lower, ci_upper = upper, extra = extra, n_used = n_used,
    deviance = deviance)
}
ctl <- glm.control(epsilon = 1e-14, maxit = 200)

# Profile-likelihood bounds of coefficient j of a Poisson glm: where the deviance of
# the refit with that coefficient fixed exceeds the fit's deviance by qchisq(0.95, 1).
profile_bounds <- function(fit, j, level = 0.95) {
  x <- model.matrix(fit); y <- fit$y; off <- model.offset(model.frame(fit))
  if (is.null(off)) off <- rep(0, length(y))
  target <- deviance(fit) + qchisq(level, 1)
  dev_at <- function(b) {
    others <- x[, -j, drop = FALSE]
    refit <- suppressWarnings(glm.fit(others, y, offset = off + x[, j] * b,
                                      family = poisson(), control = ctl))
    refit$deviance - target
  }
  est <- coef(fit)[j]; se <- sqrt(diag(vcov(fit)))[j]
  step <- if (se < 10) se else 1
  bound <- function(side) {
    inner <- est; delta <- step
    for (k in 1:60) {
      outer <- est + side * delta
      if (abs(outer) > 1e3) return(NA)
      if (dev_at(outer) > 0) return(uniroot(dev_at, sort(c(inner, outer)),
                                            tol = 1e-12)$root)
      inner <- outer; delta <- 2 * delta
    }
    NA
  }
  c(bound(-1), bound(+1))
}

# GEE, exchangeable working correlation; extra = the estimated correlation alpha
for (case in c("gee", "gee_offset")) {
  f <- "n_cmb ~ age + sex + group + years"
  off <- if (case == "gee_offset") log(rep_d$coverage) else rep(0, nrow(rep_d))
  fit <- geeglm(as.formula(f), data = rep_d, id = id, family = poisson,
                corstr = "exchangeable", offset = off,
                control = geese.control(epsilon = 1e-12, maxit = 200))
  co <- summary(fit)$coefficients
  add(case, "gee", f, rownames(co), co[, 1], co[, 2], co[, 4],
      extra = unname(summary(fit)$corr[1, 1]), n_used = nrow(rep_d))
}

# Rate of new lesions per year: Poisson and negative binomial with offset
f <- "n_new ~ age + sex + group + offset(log(interval_years))"
fit <- glm(as.formula(f), data = rate_d, family = poisson(), control = ctl)
co <- summary(fit)$coefficients
add("rate", "poisson", f, rownames(co), co[, 1], co[, 2], co[, 4],
    n_used = nobs(fit), deviance = deviance(fit),
    extra = sum(residuals(fit, type = "pearson")^2) / fit$df.residual)
nb <- glm.nb(as.formula(f), data = rate_d, control = glm.control(epsilon = 1e-12, maxit = 500))
co <- summary(nb)$coefficients
add("rate", "negative_binomial", f, rownames(co), co[, 1], co[, 2], co[, 4],
    extra = nb$theta, n_used = nobs(nb), deviance = deviance(nb))
ci <- suppressMessages(confint(fit))
add("rate", "profile", f, rownames(ci), coef(fit), NA, NA, ci[, 1], ci[, 2])
ci <- t(sapply(seq_along(coef(fit)), function(j) profile_bounds(fit, j)))
add("rate", "profile_uniroot", f, names(coef(fit)), coef(fit), NA, NA, ci[, 1], ci[, 2])

# Separation: no control has a microbleed
for (f in c("n_cmb ~ group + age", "n_cmb ~ group + dose")) {
  ml <- glm(as.formula(f), data = sep_d, family = poisson(), control = ctl)
  br <- glm(as.formula(f), data = sep_d, family = poisson(), method = "brglmFit",
            type = "AS_mean", epsilon = 1e-12, maxit = 500)
  co <- summary(br)$coefficients
  z <- qnorm(0.975)
  add("separation", "firth", f, rownames(co), co[, 1], co[, 2], co[, 4],
      co[, 1] - z * co[, 2], co[, 1] + z * co[, 2])
  ci <- t(sapply(seq_along(coef(ml)), function(j) profile_bounds(ml, j)))
  add("separation", "profile", f, names(coef(ml)), coef(ml), NA, NA, ci[, 1], ci[, 2],
      deviance = deviance(ml))
}
# Firth and profile on an ordinary (not separated) model with an offset
f <- "n_new ~ age + sex + offset(log(interval_years))"
br <- glm(as.formula(f), data = rate_d, family = poisson(), method = "brglmFit",
          type = "AS_mean", epsilon = 1e-12, maxit = 500)
co <- summary(br)$coefficients
add("rate", "firth", f, rownames(co), co[, 1], co[, 2], co[, 4],
    co[, 1] - qnorm(0.975) * co[, 2], co[, 1] + qnorm(0.975) * co[, 2])
write.csv(do.call(rbind, rows), "repeated_reference.csv", row.names = FALSE)

/* pre_dispatch: a tiny arithmetic parser ("2*n_jobs", "all", an integer), so no evaluator
 * ever sees user text. */
#include "internal.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

struct expr {
    const char *s;
    double n_jobs;
    const char *error;
};

static double parse_sum(struct expr *e);

static void skip_space(struct expr *e)
{
    while (*e->s == ' ' || *e->s == '\t')
        e->s++;
}

static bool accept(struct expr *e, const char *tok)
{
    skip_space(e);
    size_t len = strlen(tok);
    if (strncmp(e->s, tok, len) != 0)
        return false;
    /* "*" must not swallow the first half of "**", nor "/" of "//". */
    if (len == 1 && (tok[0] == '*' || tok[0] == '/') && e->s[1] == tok[0])
        return false;
    e->s += len;
    return true;
}

static double parse_atom(struct expr *e)
{
    skip_space(e);
    if (accept(e, "(")) {
        double v = parse_sum(e);
        if (!accept(e, ")") && !e->error)
            e->error = "missing ')'";
        return v;
    }
    if (strncmp(e->s, "n_jobs", 6) == 0 && !isalnum((unsigned char)e->s[6]) && e->s[6] != '_') {
        e->s += 6;
        return e->n_jobs;
    }
    if (isdigit((unsigned char)*e->s)) {
        double v = 0;
        while (isdigit((unsigned char)*e->s))
            v = v * 10 + (*e->s++ - '0');
        return v;
    }
    if (!e->error)
        e->error = *e->s ? "expected a number, n_jobs or '('" : "unexpected end";
    return 0;
}

static double parse_unary(struct expr *e);

static double parse_power(struct expr *e)
{
    double base = parse_atom(e);
    if (accept(e, "**"))
        return pow(base, parse_unary(e)); /* right-associative, binds tighter than unary - */
    return base;
}

static double parse_unary(struct expr *e)
{
    if (accept(e, "-"))
        return -parse_unary(e);
    if (accept(e, "+"))
        return parse_unary(e);
    return parse_power(e);
}

static double parse_product(struct expr *e)
{
    double v = parse_unary(e);
    for (;;) {
        int op = accept(e, "**") ? (e->error = "misplaced '**'", 0)
               : accept(e, "//") ? 'f' : accept(e, "*") ? '*' : accept(e, "/") ? '/'
               : accept(e, "%") ? '%' : 0;
        if (!op || e->error)
            return v;
        double r = parse_unary(e);
        if (op == '*') {
            v *= r;
            continue;
        }
        if (r == 0) {
            e->error = "division by zero";
            return 0;
        }
        if (op == '/')
            v /= r;
        else if (op == 'f')
            v = floor(v / r);
        else
            v = v - r * floor(v / r); /* Python's %: the sign of the divisor */
    }
}

static double parse_sum(struct expr *e)
{
    double v = parse_product(e);
    for (;;) {
        if (accept(e, "+"))
            v += parse_product(e);
        else if (accept(e, "-"))
            v -= parse_product(e);
        else
            return v;
    }
}

int pj__eval_pre_dispatch(const char *expr, int n_jobs, size_t *out, char *err, size_t errlen)
{
    if (strcmp(expr, "all") == 0) {
        *out = SIZE_MAX;
        return 0;
    }
    size_t len = strlen(expr);
    if (len > PJ_PRE_DISPATCH_MAX) {
        /* Shown whole, so that the reader sees what was refused, up to what a message holds. */
        snprintf(err, errlen, "pre_dispatch \"%.200s\"%s is %zu characters long, longer than "
                 "%d characters (PJ_PRE_DISPATCH_MAX)", expr, len > 200 ? " (cut here)" : "",
                 len, PJ_PRE_DISPATCH_MAX);
        return PJ_EINVAL;
    }
    struct expr e = { .s = expr, .n_jobs = n_jobs };
    double v = parse_sum(&e);
    skip_space(&e);
    if (!e.error && *e.s)
        e.error = "unexpected text";
    if (e.error) {
        snprintf(err, errlen, "pre_dispatch \"%s\": %s at offset %d (expected \"all\", an "
                 "integer or an expression in n_jobs such as \"2*n_jobs\")", expr, e.error,
                 (int)(e.s - expr));
        return PJ_EINVAL;
    }
    if (!(v >= 1) || v > 1e12) {
        snprintf(err, errlen, "pre_dispatch \"%s\" evaluates to %g; it must be at least 1",
                 expr, v);
        return PJ_EINVAL;
    }
    *out = (size_t)v;
    return 0;
}

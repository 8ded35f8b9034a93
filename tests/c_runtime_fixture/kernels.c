/* Hand-written entry points following dslc's entry-point ABI version 1 (docs/design.md), used by
 * tests/test_runtime.py to exercise runtime.call without the compiler.  The NAME__py variants take
 * each array as a PyObject* to a NumPy array and read data (offset 16) and dimensions (offset 32)
 * from the PyArrayObject struct, as the JIT's fast-path entry points do.
 *
 * Site numbering is given by the signatures in test_runtime.py. */
#include <stdint.h>
#include <time.h>

#define PY_DATA(o) (*(void **)((char *)(o) + 16))
#define PY_DIMS(o) (*(int64_t **)((char *)(o) + 32))

static int32_t fail_with(int64_t *err, int32_t site, int64_t a, int64_t b) {
    if (err) { err[0] = site; err[1] = a; err[2] = b; }
    return site;
}

/* axpy(a: f32, x: f32[n], y: f32[n]) -> f32[n]; site 1: shape */
int32_t axpy(float a, const float *x, int64_t xn, const float *y, int64_t yn,
             float *out, int64_t on, int64_t *err) {
    if (xn != yn) return fail_with(err, 1, xn, yn);
    if (on != xn) return fail_with(err, 1, xn, on);
    for (int64_t i = 0; i < xn; i++) out[i] = a * x[i] + y[i];
    return 0;
}
int32_t axpy__py(float a, void *x, void *y, void *out, int64_t *err) {
    return axpy(a, PY_DATA(x), PY_DIMS(x)[0], PY_DATA(y), PY_DIMS(y)[0], PY_DATA(out), PY_DIMS(out)[0], err);
}

/* sq1(x: f32[n]) -> f32[n]: x*x + 1, the benchmark kernel */
int32_t sq1(const float *x, int64_t n, float *out, int64_t on, int64_t *err) {
    if (on != n) return fail_with(err, 1, n, on);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * x[i] + 1.0f;
    return 0;
}
int32_t sq1__py(void *x, void *out, int64_t *err) {
    return sq1(PY_DATA(x), PY_DIMS(x)[0], PY_DATA(out), PY_DIMS(out)[0], err);
}

/* total(x: f64[n]) -> f64 */
int32_t total(const double *x, int64_t n, double *out, int64_t *err) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    *out = s;
    return 0;
}
int32_t total__py(void *x, double *out, int64_t *err) {
    return total(PY_DATA(x), PY_DIMS(x)[0], out, err);
}

/* stats(x: i32[n], k: i64, flag: bool) -> (i64, f64[n], bool): (sum(x) + k, x / 2, not flag) */
int32_t stats(const int32_t *x, int64_t n, int64_t k, uint8_t flag,
              int64_t *s, double *half, int64_t hn, uint8_t *nflag, int64_t *err) {
    if (hn != n) return fail_with(err, 1, n, hn);
    int64_t acc = k;
    for (int64_t i = 0; i < n; i++) { acc += x[i]; half[i] = x[i] / 2.0; }
    *s = acc;
    *nflag = !flag;
    return 0;
}

/* pad(x: f32[n], k: i64) -> f32[n + k]: x followed by k zeros (or truncated when k < 0) */
int32_t pad(const float *x, int64_t n, int64_t k, float *out, int64_t on, int64_t *err) {
    if (on != n + k) return fail_with(err, 1, n + k, on);
    for (int64_t i = 0; i < on; i++) out[i] = i < n ? x[i] : 0.0f;
    return 0;
}
int32_t pad__py(void *x, int64_t k, void *out, int64_t *err) {
    return pad(PY_DATA(x), PY_DIMS(x)[0], k, PY_DATA(out), PY_DIMS(out)[0], err);
}

/* padct(x: f32[n], k: i64, ct: f32[n + k]) -> f32[n] (a parameter whose extent is an expression) */
int32_t padct(const float *x, int64_t n, int64_t k, const float *ct, int64_t cn,
              float *out, int64_t on, int64_t *err) {
    if (cn != n + k) return fail_with(err, 1, n + k, cn);
    if (on != n) return fail_with(err, 1, n, on);
    for (int64_t i = 0; i < n; i++) out[i] = i < cn ? ct[i] : 0.0f;
    return 0;
}

/* gather(x: f32[n], idx: i64[m]) -> f32[m]; site 1: index */
int32_t gather(const float *x, int64_t n, const int64_t *idx, int64_t m, float *out, int64_t om,
               int64_t *err) {
    if (om != m) return fail_with(err, 2, m, om);
    for (int64_t i = 0; i < m; i++) {
        int64_t j = idx[i];
        if (j < 0 || j >= n) return fail_with(err, 1, j, n);
        out[i] = x[j];
    }
    return 0;
}

/* idiv(a: i64[n], b: i64[n]) -> i64[n], floor division; site 1: zerodiv, site 2: shape */
int32_t idiv(const int64_t *a, int64_t n, const int64_t *b, int64_t bn, int64_t *out, int64_t on,
             int64_t *err) {
    if (bn != n) return fail_with(err, 2, n, bn);
    if (on != n) return fail_with(err, 2, n, on);
    for (int64_t i = 0; i < n; i++) {
        if (b[i] == 0) return fail_with(err, 1, 0, 0);
        int64_t q = a[i] / b[i];
        if ((a[i] % b[i] != 0) && ((a[i] < 0) != (b[i] < 0))) q -= 1;
        out[i] = q;
    }
    return 0;
}

/* fail(mode: i32) -> f64: mode 0 ok (writes 1.5); 1..4: sites 1..4 (index, shape, zerodiv, value)
 * with details; 5: site 1 without filling err; 6: status 99; 7: status -3 */
int32_t fail(int32_t mode, double *out, int64_t *err) {
    switch (mode) {
    case 0: *out = 1.5; return 0;
    case 1: return fail_with(err, 1, 10, 10);
    case 2: return fail_with(err, 2, 3, 4);
    case 3: return fail_with(err, 3, 0, 0);
    case 4: return fail_with(err, 4, 0, 0);
    case 5: return 1;
    case 6: return 99;
    default: return -3;
    }
}

/* matvec(A: f64[m, n], x: f64[n]) -> f64[m] */
int32_t matvec(const double *A, int64_t m, int64_t n, const double *x, int64_t xn,
               double *out, int64_t om, int64_t *err) {
    if (xn != n) return fail_with(err, 1, n, xn);
    if (om != m) return fail_with(err, 1, m, om);
    for (int64_t i = 0; i < m; i++) {
        double s = 0.0;
        for (int64_t j = 0; j < n; j++) s += A[i * n + j] * x[j];
        out[i] = s;
    }
    return 0;
}
int32_t matvec__py(void *A, void *x, void *out, int64_t *err) {
    return matvec(PY_DATA(A), PY_DIMS(A)[0], PY_DIMS(A)[1], PY_DATA(x), PY_DIMS(x)[0],
                  PY_DATA(out), PY_DIMS(out)[0], err);
}

/* rowsum(A: f64[m, :]) -> f64[m] */
int32_t rowsum(const double *A, int64_t m, int64_t c, double *out, int64_t om, int64_t *err) {
    if (om != m) return fail_with(err, 1, m, om);
    for (int64_t i = 0; i < m; i++) {
        double s = 0.0;
        for (int64_t j = 0; j < c; j++) s += A[i * c + j];
        out[i] = s;
    }
    return 0;
}

/* outer(x: f64[n], y: f64[m]) -> f64[n, m] */
int32_t outer(const double *x, int64_t n, const double *y, int64_t m, double *out, int64_t o0,
              int64_t o1, int64_t *err) {
    if (o0 != n || o1 != m) return fail_with(err, 1, n, o0);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) out[i * m + j] = x[i] * y[j];
    return 0;
}

/* twice3(x: f32[3]) -> f32[3] */
int32_t twice3(const float *x, int64_t n, float *out, int64_t on, int64_t *err) {
    if (n != 3 || on != 3) return fail_with(err, 1, 3, n);
    for (int i = 0; i < 3; i++) out[i] = 2.0f * x[i];
    return 0;
}

/* blocksum(x: f32[n], k: i64) -> f32[n // k] */
int32_t blocksum(const float *x, int64_t n, int64_t k, float *out, int64_t on, int64_t *err) {
    if (k == 0 || on != n / k) return fail_with(err, 1, n, on);
    for (int64_t i = 0; i < on; i++) {
        float s = 0.0f;
        for (int64_t j = 0; j < k; j++) s += x[i * k + j];
        out[i] = s;
    }
    return 0;
}

/* negate(m: bool[n]) -> bool[n] */
int32_t negate(const uint8_t *m, int64_t n, uint8_t *out, int64_t on, int64_t *err) {
    if (on != n) return fail_with(err, 1, n, on);
    for (int64_t i = 0; i < n; i++) out[i] = !m[i];
    return 0;
}

/* scale_i32(x: i32[n], s: i32) -> i32[n] */
int32_t scale_i32(const int32_t *x, int64_t n, int32_t s, int32_t *out, int64_t on, int64_t *err) {
    if (on != n) return fail_with(err, 1, n, on);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * s;
    return 0;
}

/* mix(a: f32, b: f64, c: i32, d: i64, e: bool) -> (f32, f64, i32, i64, bool): echoes its arguments */
int32_t mix(float a, double b, int32_t c, int64_t d, uint8_t e,
            float *oa, double *ob, int32_t *oc, int64_t *od, uint8_t *oe, int64_t *err) {
    *oa = a; *ob = b; *oc = c; *od = d; *oe = e;
    return 0;
}

/* nap(ms: i64) -> i64: sleeps (to check that the GIL is released during a call) */
int32_t nap(int64_t ms, int64_t *out, int64_t *err) {
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, 0);
    *out = ms;
    return 0;
}

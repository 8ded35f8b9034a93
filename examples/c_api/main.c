/* Calls a dslc-compiled loss and its gradient from C.
 *
 *   make            # runs dslc on kernels.dsl, then compiles this file against build/libkernels.so
 *   ./build/main
 *
 * Prints the mean logistic loss of a small data set, its gradient with respect to the weights
 * (loss_grad), the gradient with respect to the bias (from loss_vjp) and the model's predictions.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels.h"

#define N 6 /* samples */
#define K 3 /* features */

static const double X[N][K] = {
    {0.5, -1.2, 2.0},
    {1.5, 0.3, -0.7},
    {-0.8, 0.9, 0.1},
    {2.2, -0.4, 1.3},
    {-1.1, -1.5, 0.6},
    {0.0, 2.1, -1.8},
};
static const double y[N] = {1.0, 0.0, 1.0, 1.0, 0.0, 0.0};
static const double w[K] = {0.25, -0.5, 0.75};
static const double b = 0.1;

static int check(const char *what, int32_t status, const int64_t err[4]) {
    if (status != 0) {
        fprintf(stderr, "%s failed: status %d (details %lld, %lld)\n", what, (int)status,
                (long long)err[1], (long long)err[2]);
        return 1;
    }
    return 0;
}

int main(void) {
    int64_t err[4] = {0, 0, 0, 0};
    double value, grad_w[K], dummy_value, vjp_w[K], vjp_b, vjp_X[N][K], vjp_y[N], prob[N];

    /* loss(w, b, X, y) -> f64: arrays are (pointer, extents...), scalar outputs a pointer */
    if (check("loss", loss(w, K, b, &X[0][0], N, K, y, N, &value, err), err)) return 1;

    /* loss_grad: d loss / d w, written into a caller-allocated f64[K] */
    if (check("loss_grad", loss_grad(w, K, b, &X[0][0], N, K, y, N, grad_w, K, err), err)) return 1;

    /* loss_vjp with cotangent 1.0: the loss and the gradient of every floating-point parameter */
    if (check("loss_vjp", loss_vjp(w, K, b, &X[0][0], N, K, y, N, 1.0, &dummy_value, vjp_w, K, &vjp_b,
                                   &vjp_X[0][0], N, K, vjp_y, N, err), err)) return 1;

    if (check("predict", predict(w, K, b, &X[0][0], N, K, prob, N, err), err)) return 1;

    printf("loss = %.17g\n", value);
    printf("grad_w =");
    for (int j = 0; j < K; j++) printf(" %.17g", grad_w[j]);
    printf("\ngrad_b = %.17g\n", vjp_b);
    printf("predict =");
    for (int i = 0; i < N; i++) printf(" %.17g", prob[i]);
    printf("\n");

    /* Errors are statuses, never crashes: y's extent does not match X's rows here. */
    int32_t st = loss(w, K, b, &X[0][0], N, K, y, N - 1, &value, err);
    printf("mismatched extents -> status %d (nonzero: %s)\n", (int)st, st != 0 ? "yes" : "no");
    return 0;
}

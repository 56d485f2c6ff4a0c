/* How fast can χ² of the laminar-flow model go on this CPU? A hand-written bound, not part of the
 * package: benchmarks/native_bound.py builds and runs it beside homodyne's χ².
 *
 * It evaluates the same per-element arithmetic as homodyne._chi2's angle-addition tiles (sinc by
 * angle addition everywhere, which is enough for timing; the package switches to series and direct
 * evaluation where that would lose digits) over the upper triangle of pairs, each pair compared
 * with the data at (i, j) and at (j, i). Rows are taken in strips of SB frames so that data rows are
 * read as long streams and their mirrors as whole cache lines; OpenMP splits the strips between the
 * cores and vectorises the inner loop (`omp simd`), with no FMA contraction (as XLA).
 *
 * Input (binary, native endianness): int64 K, N; float64 a, w (= 1/σ); then float64 arrays
 * data[K][N][N], c_d[N], c_g[N], sin_table[K][N], cos_table[K][N], kappa[K], contrast[K],
 * offset[K], cos(φ0 − φ)[K], ∂κ/∂φ0[K], s. Output: one JSON object with the best of `repeats`
 * runs of each variant:
 *   full      χ² from the data
 *   prefetch  the same with software prefetching of the next data rows and mirror lines
 *   compute   the same arithmetic with the data replaced by a cache-resident row (no data read)
 *   grid      every pair of the full grid (the model evaluated twice as often), rows streamed and
 *             no mirror read
 *   read      Σ data² (the read floor, vectorised and threaded the same way)
 *   gradient  ∂χ²/∂(a, C^D, C^γ, s, φ0) on the full grid, rows streamed (`gradient` below)
 * Build: cc -O3 -march=native -ffp-contract=off -fno-math-errno -fopenmp chi2_bound.c -lm
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define SB 16         /* rows per strip */
#define PAIR_EPSILON 1e-12
#define EXPONENT_CLIP -700.0
#define G1_FLOOR 1e-10

typedef struct {
  int64_t K, N;
  double a, w;
  double *data, *c_d, *c_g, *sin_t, *cos_t, *kappa, *contrast, *offset;
} Input;

enum { FULL, PREFETCH, COMPUTE, GRID };

/* g2 of one angle at one pair from the angle tables at its row (si, ci) and column (sj, cj) and
 * the pair's shared quantities: the arithmetic of homodyne._chi2._sinc_far and _tile_by */
static inline double model_at(double si, double ci, double sj, double cj, double q1, double q2,
                              double q3, double g1d, double kap, double k_inv, double c, double o) {
  const double sd = sj * ci - cj * si, cd = cj * ci + sj * si;
  const double sinc = sd * q1 * (k_inv - kap * q3) + cd * q2;
  double g1 = g1d * sinc * sinc;
  g1 = g1 > G1_FLOOR ? g1 : G1_FLOOR;
  return o + c * (g1 * g1);
}

static double chi2(const Input *in, int variant) {
  const int64_t K = in->K, N = in->N;
  const int64_t n_strips = (N + SB - 1) / SB;
  const double *c_d = in->c_d, *c_g = in->c_g, a = in->a, w = in->w;
  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
    /* per-pair quantities of a strip, shared by the angles, and its transposed mirror */
    double *g1d = malloc(sizeof(double) * SB * N), *p1 = malloc(sizeof(double) * SB * N);
    double *p2 = malloc(sizeof(double) * SB * N), *p3 = malloc(sizeof(double) * SB * N);
    double *mirror = malloc(sizeof(double) * SB * N);
#pragma omp for schedule(dynamic, 1)
    for (int64_t s = 0; s < n_strips; s++) {
      const int64_t i0 = s * SB, i1 = i0 + SB > N ? N : i0 + SB;
      /* GRID: every pair of the rows, each compared with its own datum only */
      const int64_t first = variant == GRID ? 0 : i0;
      for (int64_t i = i0; i < i1; i++) {
        double *g = g1d + (i - i0) * N, *q1 = p1 + (i - i0) * N, *q2 = p2 + (i - i0) * N,
               *q3 = p3 + (i - i0) * N;
        const double cdi = c_d[i], cgi = c_g[i];
#pragma omp simd
        for (int64_t j = first; j < N; j++) {
          const double dd = cdi - c_d[j], md = sqrt(dd * dd + PAIR_EPSILON);
          double ex = -a * md;
          ex = ex < EXPONENT_CLIP ? EXPONENT_CLIP : (ex > 0.0 ? 0.0 : ex);
          g[j] = exp(ex);
          const double dg = c_g[j] - cgi, mg = sqrt(dg * dg + PAIR_EPSILON), inv = 1.0 / mg;
          const double e = PAIR_EPSILON / (mg + fabs(dg));
          const double sign = (double)(dg > 0) - (double)(dg < 0);
          q1[j] = sign * inv;
          q2[j] = e * inv;
          q3[j] = 0.5 * e * e;
        }
      }
      double acc = 0.0;
      for (int64_t k = 0; k < K; k++) {
        const double kap = in->kappa[k], k_inv = kap == 0.0 ? 0.0 : 1.0 / kap;
        const double c = in->contrast[k], o = in->offset[k];
        const double *sk = in->sin_t + k * N, *ck = in->cos_t + k * N;
        const double *dk = in->data + k * N * N;
        if (variant == FULL || variant == PREFETCH) {
          for (int64_t j = i0; j < N; j++) {
            const double *src = dk + j * N + i0;
            if (variant == PREFETCH && j + 8 < N) __builtin_prefetch(dk + (j + 8) * N + i0);
            for (int64_t i = 0; i < i1 - i0; i++) mirror[i * N + j] = src[i];
          }
        }
        for (int64_t i = i0; i < i1; i++) {
          const double si = sk[i], ci = ck[i];
          const double *g = g1d + (i - i0) * N, *q1 = p1 + (i - i0) * N, *q2 = p2 + (i - i0) * N,
                       *q3 = p3 + (i - i0) * N;
          /* without data, both "data" rows are rows of the strip's own (cache-resident) tables */
          const double *up = variant == COMPUTE ? q2 : dk + i * N;
          const double *down = variant == COMPUTE ? q3 : mirror + (i - i0) * N;
          if (variant == GRID) {
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < N; j++) {
              const double m = model_at(si, ci, sk[j], ck[j], q1[j], q2[j], q3[j], g[j], kap,
                                        k_inv, c, o);
              const double r = (up[j] - m) * w;
              acc += r * r;
            }
            continue;
          }
          if (variant == PREFETCH && i + 1 < i1)
            for (int64_t j = i + 1; j < N; j += 8) __builtin_prefetch(dk + (i + 1) * N + j);
          { /* the diagonal pair, once */
            const double m = model_at(si, ci, si, ci, q1[i], q2[i], q3[i], g[i], kap, k_inv, c, o);
            const double r = (up[i] - m) * w;
            acc += r * r;
          }
#pragma omp simd reduction(+ : acc)
          for (int64_t j = i + 1; j < N; j++) {
            const double m = model_at(si, ci, sk[j], ck[j], q1[j], q2[j], q3[j], g[j], kap, k_inv,
                                      c, o);
            const double r1 = (up[j] - m) * w, r2 = (down[j] - m) * w;
            acc += r1 * r1 + r2 * r2;
          }
        }
      }
      total += acc;
    }
    free(g1d), free(p1), free(p2), free(p3), free(mirror);
  }
  return total;
}


/* The derivatives of χ² (full grid, rows streamed) with respect to a, C^D, C^γ, s and φ0, as
 * homodyne._chi2's "pairs" pass computes them: per pair, sums over the angles of ∂χ²/∂g1 terms,
 * then row and column sums. Outputs: out[0] = ∂/∂a, out[1] = ∂/∂s, out[2] = ∂/∂φ0,
 * g_cd[N], g_cg[N]. */
static void gradient(const Input *in, const double *cos_k, const double *lam, double s_factor,
                     double *out, double *g_cd, double *g_cg) {
  const int64_t K = in->K, N = in->N;
  const int64_t n_strips = (N + SB - 1) / SB;
  const double *c_d = in->c_d, *c_g = in->c_g, a = in->a, w = in->w;
  double t_a = 0.0, t_s = 0.0, t_phi0 = 0.0;
  memset(g_cd, 0, sizeof(double) * N);
  memset(g_cg, 0, sizeof(double) * N);
#pragma omp parallel reduction(+ : t_a, t_s, t_phi0)
  {
    double *g1d = malloc(sizeof(double) * SB * N), *p1 = malloc(sizeof(double) * SB * N);
    double *p2 = malloc(sizeof(double) * SB * N), *p3 = malloc(sizeof(double) * SB * N);
    double *p4 = malloc(sizeof(double) * SB * N), *p5 = malloc(sizeof(double) * SB * N);
    double *along_d = malloc(sizeof(double) * SB * N), *along_s = malloc(sizeof(double) * SB * N);
    double *along_p = malloc(sizeof(double) * SB * N);
    double *my_cd = calloc(N, sizeof(double)), *my_cg = calloc(N, sizeof(double));
#pragma omp for schedule(dynamic, 1)
    for (int64_t s = 0; s < n_strips; s++) {
      const int64_t i0 = s * SB, i1 = i0 + SB > N ? N : i0 + SB;
      for (int64_t i = i0; i < i1; i++) {
        const int64_t o = (i - i0) * N;
        const double cdi = c_d[i], cgi = c_g[i];
#pragma omp simd
        for (int64_t j = 0; j < N; j++) {
          const double dd = cdi - c_d[j], md = sqrt(dd * dd + PAIR_EPSILON);
          double ex = -a * md;
          ex = ex < EXPONENT_CLIP ? EXPONENT_CLIP : (ex > 0.0 ? 0.0 : ex);
          g1d[o + j] = exp(ex);
          const double dg = c_g[j] - cgi, mg = sqrt(dg * dg + PAIR_EPSILON), inv = 1.0 / mg;
          const double e = PAIR_EPSILON / (mg + fabs(dg));
          const double sign = (double)(dg > 0) - (double)(dg < 0);
          p1[o + j] = sign * inv;
          p2[o + j] = e * inv;
          p3[o + j] = 0.5 * e * e;
          p4[o + j] = sign * e;
          p5[o + j] = inv;
          along_d[o + j] = along_s[o + j] = along_p[o + j] = 0.0;
        }
      }
      for (int64_t k = 0; k < K; k++) {
        const double kap = in->kappa[k], k_inv = kap == 0.0 ? 0.0 : 1.0 / kap;
        const double c = in->contrast[k], off = in->offset[k], ck_ = cos_k[k], lk = lam[k];
        const double *sk = in->sin_t + k * N, *ck = in->cos_t + k * N;
        const double *dk = in->data + k * N * N;
        for (int64_t i = i0; i < i1; i++) {
          const int64_t o = (i - i0) * N;
          const double si = sk[i], ci = ck[i];
          const double *row = dk + i * N;
#pragma omp simd
          for (int64_t j = 0; j < N; j++) {
            const double sd = sk[j] * ci - ck[j] * si, cd = ck[j] * ci + sk[j] * si;
            const double sinc = sd * p1[o + j] * (k_inv - kap * p3[o + j]) + cd * p2[o + j];
            const double cos_phi = cd * (1.0 - kap * kap * p3[o + j]) - kap * sd * p4[o + j];
            const double dsinc = (cos_phi - sinc) * (k_inv * p5[o + j]); /* p5 = 1/M^γ */
            const double g1u = g1d[o + j] * sinc * sinc;
            const double g1 = g1u > G1_FLOOR ? g1u : G1_FLOOR;
            const double r = (row[j] - (off + c * (g1 * g1))) * w * w;
            const double q = -4.0 * c * r * g1;
            const double v = q * g1d[o + j] * 2.0 * sinc * dsinc;
            along_d[o + j] += q * sinc * sinc;
            along_s[o + j] += v * ck_;
            along_p[o + j] += v * lk;
          }
        }
      }
      for (int64_t i = i0; i < i1; i++) {
        const int64_t o = (i - i0) * N;
        double row_cd = 0.0, row_cg = 0.0;
        for (int64_t j = 0; j < N; j++) {
          const double dd = c_d[i] - c_d[j], md = sqrt(dd * dd + PAIR_EPSILON);
          const double live = -a * md > EXPONENT_CLIP ? along_d[o + j] * g1d[o + j] : 0.0;
          const double kd = -a * live * (dd / md); /* ∂χ²/∂ΔC^D, ΔC^D = C_i − C_j */
          row_cd += kd;
          my_cd[j] -= kd;
          t_a -= live * md;
          const double dg = c_g[j] - c_g[i], mg = sqrt(dg * dg + PAIR_EPSILON);
          const double kg = s_factor * along_s[o + j] * (dg / mg); /* ∂χ²/∂ΔC^γ, C_j − C_i */
          row_cg -= kg;
          my_cg[j] += kg;
          t_s += along_s[o + j] * mg;
          t_phi0 += along_p[o + j] * mg;
        }
        my_cd[i] += row_cd;
        my_cg[i] += row_cg;
      }
    }
#pragma omp critical
    for (int64_t j = 0; j < N; j++) g_cd[j] += my_cd[j], g_cg[j] += my_cg[j];
    free(g1d), free(p1), free(p2), free(p3), free(p4), free(p5), free(along_d), free(along_s), free(along_p);
    free(my_cd), free(my_cg);
  }
  out[0] = t_a, out[1] = t_s, out[2] = t_phi0;
}

static double read_floor(const Input *in) {
  const int64_t n = in->K * in->N * in->N;
  const double *data = in->data;
  double s = 0.0;
#pragma omp parallel for simd reduction(+ : s)
  for (int64_t x = 0; x < n; x++) s += data[x] * data[x];
  return s;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double *take(FILE *f, int64_t n) {
  /* large arrays on transparent huge pages, as XLA's allocator gets them (THP is "madvise" here) */
  const size_t align = 2 << 20, bytes = (sizeof(double) * n + align - 1) / align * align;
  double *x = NULL;
  if (posix_memalign((void **)&x, align, bytes) == 0) madvise(x, bytes, MADV_HUGEPAGE);
  if (!x || fread(x, sizeof(double), n, f) != (size_t)n) {
    fprintf(stderr, "chi2_bound: short input\n");
    exit(1);
  }
  return x;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: chi2_bound INPUT [repeats]\n");
    return 2;
  }
  const int repeats = argc > 2 ? atoi(argv[2]) : 7;
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  Input in;
  if (fread(&in.K, 8, 1, f) != 1 || fread(&in.N, 8, 1, f) != 1 || fread(&in.a, 8, 1, f) != 1 ||
      fread(&in.w, 8, 1, f) != 1) {
    fprintf(stderr, "chi2_bound: short header\n");
    return 1;
  }
  in.data = take(f, in.K * in.N * in.N);
  in.c_d = take(f, in.N), in.c_g = take(f, in.N);
  in.sin_t = take(f, in.K * in.N), in.cos_t = take(f, in.K * in.N);
  in.kappa = take(f, in.K), in.contrast = take(f, in.K), in.offset = take(f, in.K);
  double *cos_k = take(f, in.K), *lam = take(f, in.K), *s_factor = take(f, 1);
  fclose(f);

  const char *names[] = {"full", "prefetch", "compute", "grid", "read"};
  printf("{\"threads\": %d", omp_get_max_threads());
  for (int v = 0; v < 5; v++) {
    double best = 1e300, value = 0.0;
    for (int r = 0; r < repeats + 1; r++) { /* the first run warms up */
      const double t0 = now();
      value = v == 4 ? read_floor(&in) : chi2(&in, v);
      const double dt = now() - t0;
      if (r > 0 && dt < best) best = dt;
    }
    printf(", \"%s\": {\"seconds\": %.9g, \"value\": %.17g}", names[v], best, value);
  }
  double sums[3] = {0.0, 0.0, 0.0}, *g_cd = malloc(sizeof(double) * in.N), *g_cg = malloc(sizeof(double) * in.N);
  double best = 1e300;
  for (int r = 0; r < repeats + 1; r++) {
    const double t0 = now();
    gradient(&in, cos_k, lam, *s_factor, sums, g_cd, g_cg);
    const double dt = now() - t0;
    if (r > 0 && dt < best) best = dt;
  }
  printf(", \"gradient\": {\"seconds\": %.9g, \"a\": %.17g, \"s\": %.17g, \"phi0\": %.17g", best,
         sums[0], sums[1], sums[2]);
  const char *keys[] = {"c_d", "c_g"};
  const double *vectors[] = {g_cd, g_cg};
  for (int v = 0; v < 2; v++) {
    printf(", \"%s\": [", keys[v]);
    for (int64_t j = 0; j < in.N; j++) printf("%s%.17g", j ? ", " : "", vectors[v][j]);
    printf("]");
  }
  printf("}}\n");
  return 0;
}

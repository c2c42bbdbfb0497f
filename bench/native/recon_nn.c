/*
 * The native yardstick for bench/recon.bench.ts: a straightforward single-threaded C
 * pixel-nearest-neighbour paste loop with MEAN compounding, the same computation as
 * streamer/reconstruct.ts (uint32 sum + uint32 count per voxel, interleaved; output
 * trunc(sum / count) as uint8, PLUS's NN convention), with a per-pixel bounds check instead of our per-row span solve.
 *
 * Built at bench time: cc -O3 -march=native -ffp-contract=off (no FMA contraction, so that
 * positions round exactly as in JavaScript and the volumes can be compared byte for byte).
 *
 * Input file (little-endian): int32 nFrames, width, height, nx, ny, nz; float64 origin[3],
 * spacing[3]; float64 imageToReference[nFrames][16] (row-major, Image px -> Reference mm);
 * uint8 pixels[nFrames][height][width].
 * Output (stdout): "paste_ms <ms> total_ms <ms> hash <fnv1a-32 of the uint8 volume> filled <n>".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void read_exact(FILE *f, void *p, size_t n) {
  if (fread(p, 1, n, f) != n) {
    fprintf(stderr, "recon_nn: short read\n");
    exit(2);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: recon_nn FILE [VOLUME_OUT]\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 2;
  }
  int32_t hdr[6];
  double org[3], sp[3];
  read_exact(f, hdr, sizeof hdr);
  read_exact(f, org, sizeof org);
  read_exact(f, sp, sizeof sp);
  const int nf = hdr[0], w = hdr[1], h = hdr[2], nx = hdr[3], ny = hdr[4], nz = hdr[5];
  double *mats = malloc(sizeof(double) * 16 * (size_t)nf);
  uint8_t *pix = malloc((size_t)nf * w * h);
  read_exact(f, mats, sizeof(double) * 16 * (size_t)nf);
  read_exact(f, pix, (size_t)nf * w * h);
  fclose(f);

  const size_t nvox = (size_t)nx * ny * nz;
  const size_t nxy = (size_t)nx * ny;
  double t0 = now_ms();
  uint32_t *acc = calloc(2 * nvox, sizeof(uint32_t));
  for (int k = 0; k < nf; k++) {
    const double *m = mats + 16 * k;
    double M[12];
    for (int a = 0; a < 3; a++) {
      double inv = 1.0 / sp[a];
      M[a * 4 + 0] = m[a * 4 + 0] * inv;
      M[a * 4 + 1] = m[a * 4 + 1] * inv;
      M[a * 4 + 2] = m[a * 4 + 2] * inv;
      M[a * 4 + 3] = (m[a * 4 + 3] - org[a]) * inv;
    }
    const uint8_t *img = pix + (size_t)k * w * h;
    for (int v = 0; v < h; v++) {
      const double bx = M[3] + v * M[1] + 0.5, by = M[7] + v * M[5] + 0.5, bz = M[11] + v * M[9] + 0.5;
      const uint8_t *row = img + (size_t)v * w;
      for (int u = 0; u < w; u++) {
        const double tx = bx + u * M[0], ty = by + u * M[4], tz = bz + u * M[8];
        if (tx < 0 || ty < 0 || tz < 0 || tx >= nx || ty >= ny || tz >= nz) continue;
        const size_t i = 2 * ((size_t)(int)tx + (size_t)(int)ty * nx + (size_t)(int)tz * nxy);
        acc[i] += row[u];
        acc[i + 1] += 1;
      }
    }
  }
  double t1 = now_ms();
  uint8_t *vol = malloc(nvox);
  size_t filled = 0;
  for (size_t i = 0; i < nvox; i++) {
    uint32_t c = acc[2 * i + 1];
    vol[i] = c ? (uint8_t)((double)acc[2 * i] / c) : 0;
    filled += c != 0;
  }
  double t2 = now_ms();
  uint32_t hash = 2166136261u;
  for (size_t i = 0; i < nvox; i++) hash = (hash ^ vol[i]) * 16777619u;
  if (argc > 2) {
    FILE *o = fopen(argv[2], "wb");
    if (o) {
      fwrite(vol, 1, nvox, o);
      fclose(o);
    }
  }
  printf("paste_ms %.3f total_ms %.3f hash %u filled %zu\n", t1 - t0, t2 - t0, hash, filled);
  free(acc);
  free(vol);
  free(pix);
  free(mats);
  return 0;
}

// Compiled and linked, never run: proves that OpenBLAS's CBLAS header and library are usable.
#include <cblas.h>

int main() {
  float a = 1, b = 1, c = 0;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
  return c == 1.0f ? 0 : 1;
}

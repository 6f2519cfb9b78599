// Compiled and linked, never run: proves that oneDNN's headers and libraries are usable.
#include <oneapi/dnnl/dnnl.h>

int main() {
  const dnnl_version_t* version = dnnl_version();
  float a = 1, b = 1, c = 0;
  return dnnl_sgemm('N', 'N', 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1) == dnnl_success && version ? 0 : 1;
}

// Reading the golden files of tests/data (made by the committed make_*_golden.py scripts) and
// comparing against them.
#pragma once

#include "support.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace dynrnn::test {

/// Where the golden files are.
inline const std::string kData = DYNRNN_TEST_DATA_DIR;

/// Relative tolerance of a pass in double against a golden file (the references are double
/// too, so the two differ by roundings alone).
inline constexpr double kGoldenTolerance = 1e-10;

/// Largest |a - b| / max(|a|, |b|, 1) over `n` entries.
inline double max_relative_error(const double* a, const double* b, std::size_t n) {
  double worst = 0;
  for (std::size_t k = 0; k < n; ++k) worst = std::max(worst, relative_error(a[k], b[k], 1.0));
  return worst;
}

/// The same over two objects of equal size (Eigen matrices, vectors or tensors of double).
template <class A, class B>
double max_relative_error(const A& a, const B& b) {
  EXPECT_EQ(a.size(), b.size());
  return max_relative_error(a.data(), b.data(), std::size_t(std::min<Index>(a.size(), b.size())));
}

/// A golden batch: T = 6 steps, B = 5 rows of lengths 6, 3, 0, 1, 5, I = 3 inputs and H = 4
/// hidden units, with named tensors read by shape.
struct GoldenFile {
  safetensors::File f;
  Index T = 6, B = 5, I = 3, H = 4;

  explicit GoldenFile(const std::string& name) : f(safetensors::File::read(kData + "/" + name)) {}

  Tensor3<double> tensor(const std::string& name, Index k) const {
    Tensor3<double> t(T, B, k);
    f.read_into(name, {std::uint64_t(T), std::uint64_t(B), std::uint64_t(k)}, t.data());
    return t;
  }
  Matrix<double> matrix(const std::string& name, Index rows, Index cols) const {
    Matrix<double> m(rows, cols);
    f.read_into(name, {std::uint64_t(rows), std::uint64_t(cols)}, m.data());
    return m;
  }
  Vector<double> vector(const std::string& name, Index n) const {
    Vector<double> v(n);
    f.read_into(name, {std::uint64_t(n)}, v.data());
    return v;
  }
  /// A [n, rows, cols] tensor as n matrices.
  std::vector<Matrix<double>> slices(const std::string& name, Index n, Index rows, Index cols) const {
    std::vector<double> all(static_cast<std::size_t>(n * rows * cols));
    f.read_into(name, {std::uint64_t(n), std::uint64_t(rows), std::uint64_t(cols)}, all.data());
    std::vector<Matrix<double>> out;
    for (Index k = 0; k < n; ++k)
      out.push_back(Eigen::Map<const Matrix<double>>(all.data() + k * rows * cols, rows, cols));
    return out;
  }
  std::vector<int> lengths() const {
    std::vector<std::int64_t> l(static_cast<std::size_t>(B));
    f.read_into("lengths", {std::uint64_t(B)}, l.data());
    return {l.begin(), l.end()};
  }
};

}  // namespace dynrnn::test

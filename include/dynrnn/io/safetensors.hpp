// dynrnn: the safetensors file format, read with full validation and written.
//
// Layout (https://github.com/huggingface/safetensors, little-endian throughout):
//
//   +----------------+---------------------------+--------------------------------+
//   | N: uint64 (8 B)| header: N bytes of JSON    | data: the tensors' raw bytes   |
//   +----------------+---------------------------+--------------------------------+
//
//   header = { "__metadata__": { "key": "value", ... },                (optional)
//              "name": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] },
//              ... }
//
// Offsets are relative to the start of the data section; tensors are stored row-major
// ("C order"), which is also dynrnn's Matrix layout. A file is accepted only if it is
// exactly what the format allows: the header length fits the file, the JSON is well
// formed with no repeated key and is followed by nothing but spaces (the format's only
// padding; a NUL byte, which would end the JSON parser's input early, is refused wherever
// it is), every dtype is known, every byte count matches its shape,
// and the tensors tile the data section with no overlap, no hole and nothing past its
// end. Anything else throws CheckpointError naming the file and the problem, before any
// tensor is handed out.
#pragma once

#include "../core/check.hpp"
#include "../core/types.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "dynrnn's safetensors code reads and writes raw little-endian data and supports little-endian hosts only"
#endif

namespace dynrnn {

/// \brief A checkpoint or weight file that cannot be read or written. The message names the
/// file and the problem; a failed load leaves the model it was loading into unchanged.
class CheckpointError : public std::runtime_error {
 public:
  /// \param file    the file's path (or a name for an in-memory buffer).
  /// \param problem what is wrong, e.g. "tensor 'lstm/kernel' is missing". Control
  ///                characters in it (a NUL, say, quoted from a damaged file) are shown as
  ///                \xNN, so that what() is never cut short.
  CheckpointError(const std::string& file, const std::string& problem)
      : std::runtime_error("dynrnn: checkpoint '" + printable(file) + "': " + printable(problem)),
        file_(file),
        problem_(printable(problem)) {}

  const std::string& file() const { return file_; }        ///< The file's path.
  const std::string& problem() const { return problem_; }  ///< The problem alone.

 private:
  static std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char ch : s) {
      if (ch >= 0x20 && ch != 0x7f) {
        out += char(ch);
      } else {
        static const char* hex = "0123456789abcdef";
        out += "\\x";
        out += hex[ch >> 4];
        out += hex[ch & 15];
      }
    }
    return out;
  }

  std::string file_, problem_;
};

namespace safetensors {

/// \brief Element types defined by the safetensors format, named as in its header.
enum class DType {
  BOOL,     ///< Boolean, 1 byte.
  U8,       ///< Unsigned 8-bit integer.
  I8,       ///< Signed 8-bit integer.
  F8_E5M2,  ///< 8-bit float, 5 exponent and 2 mantissa bits.
  F8_E4M3,  ///< 8-bit float, 4 exponent and 3 mantissa bits.
  I16,      ///< Signed 16-bit integer.
  U16,      ///< Unsigned 16-bit integer.
  F16,      ///< IEEE half precision.
  BF16,     ///< bfloat16.
  I32,      ///< Signed 32-bit integer.
  U32,      ///< Unsigned 32-bit integer.
  F32,      ///< IEEE single precision (float).
  I64,      ///< Signed 64-bit integer.
  U64,      ///< Unsigned 64-bit integer.
  F64,      ///< IEEE double precision (double).
};

/// \brief The format's name of a dtype, e.g. "F32".
inline const char* dtype_name(DType d) {
  static const char* const names[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "I16", "U16", "F16",
                                      "BF16", "I32", "U32", "F32",     "I64",     "U64", "F64"};
  return names[static_cast<int>(d)];
}

/// \brief Bytes per element of a dtype.
inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::BOOL: case DType::U8: case DType::I8: case DType::F8_E5M2: case DType::F8_E4M3: return 1;
    case DType::I16: case DType::U16: case DType::F16: case DType::BF16: return 2;
    case DType::I32: case DType::U32: case DType::F32: return 4;
    case DType::I64: case DType::U64: case DType::F64: return 8;
  }
  return 0;
}

/// \brief The dtype that stores `T` (float, double, int32 or int64).
template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  else if constexpr (std::is_same_v<T, double>) return DType::F64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return DType::I32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return DType::I64;
  else static_assert(sizeof(T) == 0, "safetensors: no dtype for this type");
}

/// \brief Number of elements of a tensor of `shape`, the product of its dimensions (1 for a
/// scalar). The caller makes sure it fits 64 bits.
inline std::uint64_t element_count(const std::vector<std::uint64_t>& shape) {
  std::uint64_t n = 1;
  for (std::uint64_t d : shape) n *= d;
  return n;
}

/// \brief One tensor's entry in the header.
struct TensorInfo {
  DType dtype = DType::F32;             ///< Element type.
  std::vector<std::uint64_t> shape;     ///< Dimensions, outermost first; empty for a scalar.
  std::uint64_t begin = 0, end = 0;     ///< Byte range within the data section.

  /// \brief Number of elements, the product of the shape (1 for a scalar).
  std::uint64_t elements() const { return element_count(shape); }
};

/// \brief Formats a shape as "[a, b]".
inline std::string shape_string(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + "]";
}

/// \brief The 8-byte little-endian unsigned integer at `bytes`, e.g. a file's header length.
inline std::uint64_t read_le64(const unsigned char* bytes) {
  std::uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | bytes[k];
  return n;
}

/// \brief Appends `value` to `out` as 8 little-endian bytes.
inline void append_le64(std::vector<unsigned char>& out, std::uint64_t value) {
  for (int k = 0; k < 8; ++k) out.push_back(static_cast<unsigned char>(value >> (8 * k)));
}

/// \brief The largest header accepted, as in the format's reference implementation.
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

/// \brief A validated safetensors file held in memory.
///
/// \code
/// auto f = dynrnn::safetensors::File::read("model.safetensors");
/// dynrnn::Matrix<double> w(4, 3);
/// f.read_into("weight", {4, 3}, w.data());      // checks dtype and shape, converts to double
/// \endcode
class File {
 public:
  /// \brief Parses and validates a whole file held in `bytes`.
  /// \param source names the bytes in error messages (a path, or e.g. "<memory>").
  /// \throws CheckpointError when the bytes are not a valid safetensors file.
  static File parse(std::vector<unsigned char> bytes, std::string source) {
    File f;
    f.source_ = std::move(source);
    f.bytes_ = std::move(bytes);
    f.validate();
    return f;
  }

  /// \brief Reads and validates the file at `path`.
  /// \throws CheckpointError when it cannot be read or is not a valid safetensors file.
  static File read(const std::string& path) { return parse(read_bytes(path), path); }

  /// \brief The bytes of the file at `path`, unchecked.
  /// \throws CheckpointError when it cannot be read.
  static std::vector<unsigned char> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw CheckpointError(path, "cannot open it for reading");
    const std::streamoff size = in.tellg();
    if (size < 0) throw CheckpointError(path, "cannot determine its size");
    std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
    in.seekg(0);
    if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
      throw CheckpointError(path, "cannot read its " + std::to_string(size) + " bytes");
    return bytes;
  }

  /// \brief The path or name given to read() or parse().
  const std::string& source() const { return source_; }
  /// \brief The "__metadata__" entries (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// \brief Every tensor, by name.
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  /// \brief Whether a tensor of this name exists.
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  /// \brief The entry of tensor `name`.
  /// \throws CheckpointError when there is no such tensor.
  const TensorInfo& info(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail("tensor '" + name + "' is missing");
    return it->second;
  }

  /// \brief Throws CheckpointError unless tensor `name` exists, has exactly `shape`, and a dtype
  /// that converts to `T` exactly or by rounding (F32/F64 for a floating T; I32/I64 for an
  /// integer T).
  template <class T>
  void check(const std::string& name, const std::vector<std::uint64_t>& shape) const {
    const TensorInfo& t = info(name);
    const bool ok = std::is_floating_point_v<T> ? (t.dtype == DType::F32 || t.dtype == DType::F64)
                                                : (t.dtype == DType::I32 || t.dtype == DType::I64);
    if (!ok)
      fail("tensor '" + name + "' has dtype " + dtype_name(t.dtype) + ", expected " +
           (std::is_floating_point_v<T> ? "F32 or F64" : "I32 or I64"));
    if (t.shape != shape)
      fail("tensor '" + name + "' has shape " + shape_string(t.shape) + ", expected " + shape_string(shape));
  }

  /// \brief check<T>(name, shape), then copies the tensor's elements into `out` (row-major,
  /// as many as the shape holds), converted to `T`.
  template <class T>
  void read_into(const std::string& name, const std::vector<std::uint64_t>& shape, T* out) const {
    check<T>(name, shape);
    const TensorInfo& t = info(name);
    const unsigned char* p = data_section() + t.begin;
    const std::size_t n = static_cast<std::size_t>(t.elements());
    switch (t.dtype) {
      case DType::F32: convert<float>(p, n, out); break;
      case DType::F64: convert<double>(p, n, out); break;
      case DType::I32: convert<std::int32_t>(p, n, out); break;
      default: convert<std::int64_t>(p, n, out); break;  // I64; check() allowed nothing else
    }
  }

  /// \brief The raw little-endian bytes of tensor `name`.
  const unsigned char* data(const std::string& name) const { return data_section() + info(name).begin; }

  /// \brief Throws CheckpointError("<source>: <problem>").
  [[noreturn]] void fail(const std::string& problem) const { throw CheckpointError(source_, problem); }

 private:
  template <class Stored, class T>
  static void convert(const unsigned char* p, std::size_t n, T* out) {
    for (std::size_t i = 0; i < n; ++i) {
      Stored v;
      std::memcpy(&v, p + i * sizeof(Stored), sizeof(Stored));
      out[i] = static_cast<T>(v);
    }
  }

  const unsigned char* data_section() const { return bytes_.data() + 8 + header_bytes_; }

  static bool parse_dtype(const std::string& s, DType& d) {
    for (int k = 0; k <= static_cast<int>(DType::F64); ++k)
      if (s == dtype_name(static_cast<DType>(k))) {
        d = static_cast<DType>(k);
        return true;
      }
    return false;
  }

  void validate() {
    const std::uint64_t size = bytes_.size();
    if (size < 8)
      fail("file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
    const std::uint64_t n = read_le64(bytes_.data());
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " exceeds the " + std::to_string(size - 8) +
           " bytes after it (file truncated or header length corrupt)");
    if (n > kMaxHeaderBytes)
      fail("header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes));
    if (n < 2 || bytes_[8] != '{') fail("header does not start with '{'");
    header_bytes_ = n;
    const std::uint64_t data_size = size - 8 - n;

    const char* begin = reinterpret_cast<const char*>(bytes_.data() + 8);
    nlohmann::json header = parse_json(begin, begin + json_length(begin, n));
    if (!header.is_object()) fail("header is not a JSON object");

    for (auto& [name, value] : header.items()) {
      if (name == "__metadata__") {
        if (!value.is_object()) fail("'__metadata__' is not an object");
        for (auto& [key, v] : value.items()) {
          if (!v.is_string()) fail("metadata '" + key + "' is not a string");
          metadata_[key] = v.get<std::string>();
        }
        continue;
      }
      tensors_[name] = parse_tensor(name, value);
    }

    // The tensors must tile [0, data_size): sorted by start, each starts where the last ended.
    struct Range {
      std::uint64_t begin, end;
      const std::string* name;
    };
    std::vector<Range> ranges;
    for (const auto& [name, t] : tensors_) ranges.push_back({t.begin, t.end, &name});
    std::sort(ranges.begin(), ranges.end(),
              [](const Range& a, const Range& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
    std::uint64_t expected = 0;
    for (const Range& r : ranges)
      if (r.end > data_size)
        fail("file is truncated: tensor '" + *r.name + "' ends at data byte " + std::to_string(r.end) +
             ", but the data section holds " + std::to_string(data_size) + " bytes");
    for (const Range& r : ranges) {
      if (r.begin < expected) fail("tensor '" + *r.name + "' overlaps another tensor (data_offsets)");
      if (r.begin > expected)
        fail("data bytes [" + std::to_string(expected) + ", " + std::to_string(r.begin) +
             ") belong to no tensor (data_offsets leave a hole)");
      expected = r.end;
    }
    if (expected != data_size)
      fail("data section holds " + std::to_string(data_size) + " bytes but the tensors cover " +
           std::to_string(expected) + " (trailing bytes)");
  }

  // The length of the header's JSON value: the header without its padding, which may only be
  // spaces. No byte of the header may be NUL: the JSON parser takes NUL for the end of its
  // input and would accept whatever follows unread.
  std::uint64_t json_length(const char* header, std::uint64_t n) const {
    const auto offset = [](std::uint64_t i) { return std::to_string(8 + i); };  // in the file
    const void* nul = std::memchr(header, '\0', n);
    if (nul)
      fail("header is not valid JSON: NUL byte at file offset " +
           offset(std::uint64_t(static_cast<const char*>(nul) - header)));
    std::uint64_t end = n;  // header[0] is '{', so end stays >= 1
    while (end > 1 && header[end - 1] == ' ') --end;
    if (header[end - 1] != '}') {
      char shown[8];
      std::snprintf(shown, sizeof shown, "0x%02x", unsigned(static_cast<unsigned char>(header[end - 1])));
      fail("header is not valid JSON padded with spaces: it ends with byte " + std::string(shown) +
           " at file offset " + offset(end - 1) + ", where only '}' and then spaces may be");
    }
    return end;
  }

  // Parses the header, rejecting a key repeated within one object.
  nlohmann::json parse_json(const char* begin, const char* end) const {
    std::vector<std::set<std::string>> keys;  // one set per open object
    std::string repeated;
    auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      using E = nlohmann::json::parse_event_t;
      if (event == E::object_start) keys.emplace_back();
      else if (event == E::object_end) keys.pop_back();
      else if (event == E::key && !keys.back().insert(parsed.get<std::string>()).second && repeated.empty())
        repeated = parsed.get<std::string>();
      return true;
    };
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(begin, end, callback);
    } catch (const nlohmann::json::exception& e) {
      fail(std::string("header is not valid JSON: ") + e.what());
    }
    if (!repeated.empty()) fail("header repeats the key '" + repeated + "'");
    return j;
  }

  TensorInfo parse_tensor(const std::string& name, const nlohmann::json& v) const {
    const std::string what = "tensor '" + name + "'";
    if (!v.is_object()) fail(what + " is not a JSON object");
    for (auto& [key, unused] : v.items()) {
      (void)unused;
      if (key != "dtype" && key != "shape" && key != "data_offsets") fail(what + " has an unknown field '" + key + "'");
    }
    TensorInfo t;
    auto dtype = v.find("dtype");
    if (dtype == v.end() || !dtype->is_string()) fail(what + " has no string 'dtype'");
    if (!parse_dtype(dtype->get<std::string>(), t.dtype))
      fail(what + " has unknown dtype '" + dtype->get<std::string>() + "'");
    auto shape = v.find("shape");
    if (shape == v.end() || !shape->is_array()) fail(what + " has no array 'shape'");
    std::uint64_t elements = 1;
    bool overflow = false;
    for (const auto& d : *shape) {
      if (!d.is_number_unsigned()) fail(what + " has a shape entry that is not a non-negative integer");
      const std::uint64_t dim = d.get<std::uint64_t>();
      t.shape.push_back(dim);
      if (dim != 0 && elements > std::numeric_limits<std::uint64_t>::max() / dim) overflow = true;
      else elements *= dim;
    }
    const std::uint64_t width = dtype_size(t.dtype);
    if (overflow || elements > std::numeric_limits<std::uint64_t>::max() / width)
      fail(what + " has shape " + shape_string(t.shape) + " whose byte size overflows 64 bits");
    auto offsets = v.find("data_offsets");
    if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned())
      fail(what + " has no 'data_offsets' of two non-negative integers");
    t.begin = (*offsets)[0].get<std::uint64_t>();
    t.end = (*offsets)[1].get<std::uint64_t>();
    if (t.end < t.begin)
      fail(what + " has data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
           "] that end before they begin");
    if (t.end - t.begin != elements * width)
      fail(what + " holds " + std::to_string(t.end - t.begin) + " bytes, but dtype " + dtype_name(t.dtype) +
           " and shape " + shape_string(t.shape) + " need " + std::to_string(elements * width));
    return t;
  }

  std::string source_;
  std::vector<unsigned char> bytes_;
  std::uint64_t header_bytes_ = 0;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, TensorInfo> tensors_;
};

/// \brief Builds a safetensors file in memory: add tensors and metadata, then bytes().
class Writer {
 public:
  /// \brief Sets a "__metadata__" entry.
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  /// \brief Adds a tensor of `shape` from `count` elements of `T` (row-major).
  /// \throws std::invalid_argument when the name is taken or "__metadata__", or when `count`
  /// differs from the shape's element count.
  template <class T>
  void add(const std::string& name, const std::vector<std::uint64_t>& shape, const T* values, std::size_t count) {
    constexpr const char* fn = "safetensors::Writer::add";
    if (name == "__metadata__" || tensors_.count(name))
      detail::throw_argument(fn, "name", "a new tensor name", "'" + name + "'");
    const std::uint64_t n = element_count(shape);
    if (n != count)
      detail::throw_argument(fn, "count", std::to_string(n) + " (the elements of shape " + shape_string(shape) + ")",
                             std::to_string(count));
    Entry& e = tensors_[name];
    e.dtype = dtype_of<T>();
    e.shape = shape;
    e.bytes.resize(count * sizeof(T));
    if (count) std::memcpy(e.bytes.data(), values, count * sizeof(T));
  }

  /// \brief Adds a matrix as a 2-D tensor [rows, cols].
  template <class Scalar>
  void add(const std::string& name, const Matrix<Scalar>& m) {
    add(name, {std::uint64_t(m.rows()), std::uint64_t(m.cols())}, m.data(), std::size_t(m.size()));
  }
  /// \brief Adds a vector as a 1-D tensor [size].
  template <class Scalar>
  void add(const std::string& name, const Vector<Scalar>& v) {
    add(name, {std::uint64_t(v.size())}, v.data(), std::size_t(v.size()));
  }

  /// \brief The whole file: header length, header padded with spaces to a multiple of 8, data.
  std::vector<unsigned char> bytes() const {
    nlohmann::json header = nlohmann::json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const auto& [name, e] : tensors_) {
      header[name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes.size()}}};
      offset += e.bytes.size();
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<unsigned char> out;
    out.reserve(8 + text.size() + offset);
    append_le64(out, text.size());
    out.insert(out.end(), text.begin(), text.end());
    for (const auto& [name, e] : tensors_) out.insert(out.end(), e.bytes.begin(), e.bytes.end());
    return out;
  }

 private:
  struct Entry {
    DType dtype;
    std::vector<std::uint64_t> shape;
    std::vector<unsigned char> bytes;
  };
  std::map<std::string, std::string> metadata_;
  std::map<std::string, Entry> tensors_;
};

}  // namespace safetensors
}  // namespace dynrnn

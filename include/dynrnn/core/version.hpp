// dynrnn: library version.
#pragma once

/// \brief Major version of dynrnn.
#define DYNRNN_VERSION_MAJOR 0
/// \brief Minor version of dynrnn.
#define DYNRNN_VERSION_MINOR 1
/// \brief Patch version of dynrnn.
#define DYNRNN_VERSION_PATCH 0

namespace dynrnn {
/// \brief The library version as "major.minor.patch".
inline constexpr const char* version = "0.1.0";
}  // namespace dynrnn

# Configures dynrnn the way a user would, with a package hidden from CMake, and checks what
# configure says. Run by ctest:
#   cmake -DMODE=<mode> -DSOURCE_DIR=... -DWORK_DIR=... [-DCXX=...] -P optional_dependencies.cmake
#
# Modes (OpenCL hidden with CMAKE_DISABLE_FIND_PACKAGE_OpenCL, which makes Debian's oneDNN
# CMake package fail to load, as on a machine where libdnnl-dev was installed without its
# recommended ocl-icd-opencl-dev):
#   default_without_opencl  the default build configures, and skips the oneDNN peer with one
#                           status line naming the package that would enable it;
#   onednn_without_opencl   -DDYNRNN_GEMM=onednn stops configure with a message that names
#                           the missing Debian package.
cmake_minimum_required(VERSION 3.25)

file(REMOVE_RECURSE ${WORK_DIR})
set(args -S ${SOURCE_DIR} -B ${WORK_DIR} -DCMAKE_BUILD_TYPE=Release -DDYNRNN_BUILD_TESTS=OFF
         -DCMAKE_DISABLE_FIND_PACKAGE_OpenCL=TRUE)
if(CXX)
  list(APPEND args -DCMAKE_CXX_COMPILER=${CXX})
endif()
if(MODE STREQUAL "onednn_without_opencl")
  list(APPEND args -DDYNRNN_GEMM=onednn)
elseif(NOT MODE STREQUAL "default_without_opencl")
  message(FATAL_ERROR "MODE must be default_without_opencl or onednn_without_opencl, got '${MODE}'")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")

# Which state the machine is in: without libdnnl-dev, the OpenCL case cannot arise.
if(out MATCHES "oneDNN, which is not installed")
  set(state "libdnnl-dev not installed")
  set(expected "which is not installed \\(Debian: libdnnl-dev\\)")
else()
  set(state "libdnnl-dev installed, OpenCL hidden")
  set(expected "requires OpenCL, which was not found \\(Debian: ocl-icd-opencl-dev\\)")
endif()

if(MODE STREQUAL "default_without_opencl")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "configure failed (${rc}) although oneDNN is optional")
  endif()
  string(REGEX MATCHALL "-- dynrnn: skipping the oneDNN peer benchmarks: [^\n]*" lines "${out}")
  list(LENGTH lines count)
  if(NOT count EQUAL 1 OR NOT lines MATCHES "${expected}")
    message(FATAL_ERROR "expected one status line matching '${expected}', got ${count}: ${lines}")
  endif()
else()
  if(rc EQUAL 0)
    message(FATAL_ERROR "configure succeeded although -DDYNRNN_GEMM=onednn cannot work")
  endif()
  string(REGEX REPLACE "[ \n]+" " " flat "${out}")
  if(NOT flat MATCHES "dynrnn: -DDYNRNN_GEMM=onednn needs oneDNN.*${expected}")
    message(FATAL_ERROR "configure failed without the expected message '${expected}'")
  endif()
endif()
message("optional_dependencies: ${MODE} ok (${state})")

# The optional libraries of dynrnn's own programs: oneDNN and OpenBLAS, which the benchmarks
# measure as peers and which -DDYNRNN_GEMM=onednn|openblas uses as GEMM backends. The
# library itself never needs them.
#
# An installed package is not taken on trust: Debian's oneDNN CMake package, for one,
# requires OpenCL (from ocl-icd-opencl-dev, only a recommended package), and a plain
# find_package(dnnl QUIET) stops the whole configure when OpenCL is missing. So each finder
# first loads and links the library in a probe of its own, and only then
# brings it into this build:
#
#   dynrnn_find_onednn(<var> [REQUIRED <what needs it> [OTHERWISE <what to do instead>]])
#   dynrnn_find_openblas(<var> [REQUIRED <what needs it> [OTHERWISE <what to do instead>]])
#
# set <var> to TRUE, with the target DNNL::dnnl or dynrnn::openblas defined, when the
# library is usable. Otherwise <var> is FALSE and <var>_REASON says why and which Debian
# packages would enable it; with REQUIRED, configure stops with that reason instead.
# A working library is remembered in the cache; one that is missing or unusable is looked
# for again at the next configure, so installing its package is enough to enable it.

set(DYNRNN_PROBES_DIR ${CMAKE_CURRENT_LIST_DIR}/probes)

# -D flags that let a probe project find packages the way this build does.
function(_dynrnn_probe_flags out_var)
  set(flags "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}")
  get_cmake_property(names VARIABLES)
  foreach(name IN LISTS names)
    if(name MATCHES "^(CMAKE_(DISABLE|REQUIRE)_FIND_PACKAGE_.+|CMAKE_PREFIX_PATH|CMAKE_FIND_ROOT_PATH|CMAKE_IGNORE_PATH|CMAKE_IGNORE_PREFIX_PATH|dnnl_DIR|OpenCL_INCLUDE_DIR|OpenCL_LIBRARY)$")
      string(REPLACE ";" "\\;" value "${${name}}")
      list(APPEND flags "-D${name}=${value}")
    endif()
  endforeach()
  set(${out_var} ${flags} PARENT_SCOPE)
endfunction()

# Returns from a finder at once when its `target` is already defined.
macro(_dynrnn_return_if_defined var target)
  if(TARGET ${target})
    set(${var} TRUE PARENT_SCOPE)
    return()
  endif()
endmacro()

# Ends a finder: reports the outcome to the caller, or stops configure for a REQUIRED one.
macro(_dynrnn_optional_result var usable reason required_by otherwise)
  if(NOT ${usable} AND NOT "${required_by}" STREQUAL "")
    message(FATAL_ERROR "dynrnn: ${required_by} needs ${reason}. ${otherwise}")
  endif()
  set(${var} ${${usable}} PARENT_SCOPE)
  set(${var}_REASON "${reason}" PARENT_SCOPE)
endmacro()

function(dynrnn_find_onednn var)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "REQUIRED;OTHERWISE" "")
  _dynrnn_return_if_defined(${var} DNNL::dnnl)

  # Where the package's config file is, without loading it.
  set(prefixes ${CMAKE_PREFIX_PATH} ${CMAKE_SYSTEM_PREFIX_PATH})
  find_path(config_dir NAMES dnnl-config.cmake DNNLConfig.cmake
            HINTS ${dnnl_DIR} PATHS ${prefixes}
            PATH_SUFFIXES lib/${CMAKE_LIBRARY_ARCHITECTURE}/cmake/dnnl lib/cmake/dnnl lib64/cmake/dnnl
            NO_DEFAULT_PATH NO_CACHE)
  string(REGEX REPLACE "/$" "" config_dir "${config_dir}")
  _dynrnn_probe_flags(flags)
  set(key "${config_dir};${flags}")
  set(usable FALSE)
  if(NOT config_dir OR CMAKE_DISABLE_FIND_PACKAGE_dnnl)
    set(reason "oneDNN, which is not installed (Debian: libdnnl-dev)")
  elseif(DYNRNN_ONEDNN_PROBED STREQUAL key)
    set(usable TRUE)
  else()
    # A project of its own in a cmake process of its own: a package that fails to load
    # stops only that process (a try_compile project would stop this configure too).
    set(probe_dir ${CMAKE_BINARY_DIR}/dynrnn-probes/onednn)
    file(REMOVE_RECURSE ${probe_dir})
    execute_process(COMMAND ${CMAKE_COMMAND} -S ${DYNRNN_PROBES_DIR}/onednn -B ${probe_dir}
                            -G ${CMAKE_GENERATOR} -DCMAKE_BUILD_TYPE=Release ${flags}
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
    if(rc EQUAL 0)
      execute_process(COMMAND ${CMAKE_COMMAND} --build ${probe_dir}
                      RESULT_VARIABLE rc OUTPUT_VARIABLE build_out ERROR_VARIABLE build_out)
      string(APPEND out "${build_out}")
    endif()
    file(WRITE ${probe_dir}.log "${out}")
    if(rc EQUAL 0)
      set(usable TRUE)
      set(DYNRNN_ONEDNN_PROBED "${key}" CACHE INTERNAL "oneDNN config dir and flags that loaded and linked")
    elseif(out MATCHES "Could NOT find OpenCL|CMAKE_DISABLE_FIND_PACKAGE_OpenCL|OpenCL::OpenCL")
      set(reason "oneDNN, whose CMake package (${config_dir}) requires OpenCL, which was not found (Debian: ocl-icd-opencl-dev), probe log ${probe_dir}.log")
    else()
      set(reason "oneDNN, whose CMake package (${config_dir}) did not load or link a test program (Debian: libdnnl-dev and its recommends), probe log ${probe_dir}.log")
    endif()
  endif()
  if(usable)
    find_package(dnnl CONFIG REQUIRED PATHS ${config_dir} NO_DEFAULT_PATH)
  endif()
  _dynrnn_optional_result(${var} usable "${reason}" "${arg_REQUIRED}" "${arg_OTHERWISE}")
endfunction()

function(dynrnn_find_openblas var)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "REQUIRED;OTHERWISE" "")
  _dynrnn_return_if_defined(${var} dynrnn::openblas)

  # pkg-config knows which of Debian's OpenBLAS variants (pthread, openmp, serial) is
  # selected; without it, the library and header are looked for directly.
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(DYNRNN_OPENBLAS_PC QUIET openblas)
  endif()
  find_library(DYNRNN_OPENBLAS_LIBRARY NAMES openblas HINTS ${DYNRNN_OPENBLAS_PC_LIBRARY_DIRS})
  find_path(DYNRNN_OPENBLAS_INCLUDE_DIR cblas.h HINTS ${DYNRNN_OPENBLAS_PC_INCLUDE_DIRS}
            PATH_SUFFIXES openblas-pthread openblas)
  set(usable FALSE)
  if(NOT DYNRNN_OPENBLAS_LIBRARY OR NOT DYNRNN_OPENBLAS_INCLUDE_DIR)
    set(reason "OpenBLAS, which is not installed (Debian: libopenblas-dev)")
  else()
    set(key "${DYNRNN_OPENBLAS_LIBRARY};${DYNRNN_OPENBLAS_INCLUDE_DIR}")
    if(DYNRNN_OPENBLAS_PROBED STREQUAL key)
      set(usable TRUE)
    else()
      try_compile(usable ${CMAKE_BINARY_DIR}/dynrnn-probes/openblas ${DYNRNN_PROBES_DIR}/openblas/main.cpp
                  CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${DYNRNN_OPENBLAS_INCLUDE_DIR}"
                  LINK_LIBRARIES ${DYNRNN_OPENBLAS_LIBRARY} OUTPUT_VARIABLE out NO_CACHE)
      if(usable)
        set(DYNRNN_OPENBLAS_PROBED "${key}" CACHE INTERNAL "OpenBLAS library and header that linked")
      else()
        set(probe_log ${CMAKE_BINARY_DIR}/dynrnn-probes/openblas.log)
        file(WRITE ${probe_log} "${out}")
        set(reason "OpenBLAS, whose library ${DYNRNN_OPENBLAS_LIBRARY} and header in ${DYNRNN_OPENBLAS_INCLUDE_DIR} did not build a test program (Debian: libopenblas-dev), probe log ${probe_log}")
      endif()
    endif()
  endif()
  if(usable)
    add_library(dynrnn::openblas INTERFACE IMPORTED GLOBAL)
    target_include_directories(dynrnn::openblas SYSTEM INTERFACE ${DYNRNN_OPENBLAS_INCLUDE_DIR})
    target_link_libraries(dynrnn::openblas INTERFACE ${DYNRNN_OPENBLAS_LIBRARY})
  endif()
  _dynrnn_optional_result(${var} usable "${reason}" "${arg_REQUIRED}" "${arg_OTHERWISE}")
endfunction()

# Builds and runs tests/consumer against dynrnn, as a user would.
#   cmake -DMODE=package|subdirectory -DSOURCE_DIR=... -DWORK_DIR=... [-DCXX=...] [-DMPIEXEC=...] -P run.cmake
# package: installs dynrnn from SOURCE_DIR into WORK_DIR/prefix, then find_package()s it.
# MPIEXEC: also builds app_mpi against dynrnn::mpi and runs it on 2 ranks with this launcher.
cmake_minimum_required(VERSION 3.25)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}")
  endif()
  message("${out}")
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(consumer_args -DDYNRNN_CONSUMER_MODE=${MODE} -DCMAKE_BUILD_TYPE=Release)
if(CXX)
  list(APPEND consumer_args -DCMAKE_CXX_COMPILER=${CXX})
endif()
if(MPIEXEC)
  list(APPEND consumer_args -DDYNRNN_CONSUMER_MPI=ON)
endif()

if(MODE STREQUAL "package")
  set(prefix ${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/dynrnn-build -DDYNRNN_BUILD_TESTS=OFF
      -DDYNRNN_BUILD_BENCHMARKS=OFF -DDYNRNN_BUILD_EXAMPLES=OFF -DDYNRNN_INSTALL=ON
      -DCMAKE_INSTALL_PREFIX=${prefix})
  run(${CMAKE_COMMAND} --install ${WORK_DIR}/dynrnn-build)
  list(APPEND consumer_args -DCMAKE_PREFIX_PATH=${prefix})
else()
  list(APPEND consumer_args -DDYNRNN_SOURCE_DIR=${SOURCE_DIR})
endif()

run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/consumer-build ${consumer_args})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
run(${WORK_DIR}/consumer-build/app${CMAKE_EXECUTABLE_SUFFIX})
if(MPIEXEC)
  run(${MPIEXEC} -np 2 --oversubscribe ${WORK_DIR}/consumer-build/app_mpi${CMAKE_EXECUTABLE_SUFFIX})
endif()

# Builds the seed corpus (valid and damaged checkpoints, the golden weight files) and runs
# the fuzzer over it for SECONDS seconds; fails on any crash, leak or sanitizer report.
#
# Variables: SEEDS (fuzz_make_seeds), FUZZER (fuzz_checkpoint), CORPUS (directory),
# DATA (tests/data), SECONDS.
cmake_minimum_required(VERSION 3.25)
file(MAKE_DIRECTORY "${CORPUS}")
execute_process(COMMAND "${SEEDS}" "${CORPUS}" COMMAND_ERROR_IS_FATAL ANY)
file(GLOB golden "${DATA}/*.safetensors")
file(COPY ${golden} DESTINATION "${CORPUS}")
execute_process(COMMAND "${FUZZER}" -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
                        -print_final_stats=1 "${CORPUS}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzz_checkpoint failed (exit ${rc}); the crashing input is saved as crash-* in the working directory")
endif()
message("fuzz_checkpoint: no crash, leak or sanitizer report in ${SECONDS} s")

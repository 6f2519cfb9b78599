# --plot draws the loss curves into a PNG when gnuplot is installed; without it the example
# says so and still finishes its training with status 0.
#
# Variables: EXAMPLE (the executable), WORK_DIR.
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
execute_process(COMMAND "${EXAMPLE}" --steps 300 --checkpoint-every 0 --csv "${WORK_DIR}/loss.csv"
                        --plot "${WORK_DIR}/loss.png"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the example failed with ${rc}")
endif()
find_program(GNUPLOT gnuplot)
if(GNUPLOT)
  if(NOT EXISTS "${WORK_DIR}/loss.png")
    message(FATAL_ERROR "gnuplot is installed, but no plot was drawn")
  endif()
  file(READ "${WORK_DIR}/loss.png" magic LIMIT 8 HEX)
  if(NOT magic STREQUAL "89504e470d0a1a0a")
    message(FATAL_ERROR "loss.png is not a PNG file (it starts with ${magic})")
  endif()
  file(SIZE "${WORK_DIR}/loss.png" size)
  message("plot_runs: a PNG of ${size} bytes was drawn")
else()
  if(NOT err MATCHES "gnuplot is not installed \\(Debian: gnuplot-nox\\)")
    message(FATAL_ERROR "without gnuplot, the example did not say so")
  endif()
  message("plot_runs: without gnuplot the example said so and finished")
endif()

# Runs the count_ones example several times and compares the results byte for byte.
#
#   MODE=resume         a run of 600 steps against one of 400 steps resumed to 600: the loss
#                       curve after step 400 and the final checkpoint must be identical
#   MODE=deterministic  two runs with the same seed: identical loss curves and checkpoints
#
# Variables: COUNT_ONES (the executable), WORK_DIR, MODE, and OPTIONS (flags for every run,
# separated by spaces, e.g. "--optimizer adam --clip-norm 1").
cmake_minimum_required(VERSION 3.25)
separate_arguments(options UNIX_COMMAND "${OPTIONS}")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(count_ones name)
  execute_process(COMMAND "${COUNT_ONES}" --eval 200 --log-every 200 --csv "${WORK_DIR}/${name}.csv"
                          --checkpoint "${WORK_DIR}/${name}.safetensors" ${options} ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("--- count_ones ${options} ${ARGN} (${name})\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "count_ones (${name}) failed with ${rc}")
  endif()
endfunction()

# Lines of a loss CSV for steps after `after`, without the header.
function(curve_after file after out_var)
  file(STRINGS "${file}" lines)
  list(POP_FRONT lines)
  set(kept "")
  foreach(line IN LISTS lines)
    string(REGEX MATCH "^[0-9]+" step "${line}")
    if(step GREATER after)
      list(APPEND kept "${line}")
    endif()
  endforeach()
  set(${out_var} "${kept}" PARENT_SCOPE)
endfunction()

function(expect_same_file a b)
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${a}" "${b}" RESULT_VARIABLE differ)
  if(differ)
    message(FATAL_ERROR "${a} and ${b} differ")
  endif()
endfunction()

if(MODE STREQUAL "resume")
  count_ones(whole --steps 600)
  count_ones(first --steps 400)
  count_ones(resumed --steps 600 --resume "${WORK_DIR}/first.safetensors")
  curve_after("${WORK_DIR}/whole.csv" 400 whole)
  curve_after("${WORK_DIR}/resumed.csv" 400 resumed)
  list(LENGTH resumed n)
  if(NOT n EQUAL 200)
    message(FATAL_ERROR "the resumed run logged ${n} steps after step 400, expected 200")
  endif()
  if(NOT whole STREQUAL resumed)
    message(FATAL_ERROR "the loss curve after resuming differs from the uninterrupted run")
  endif()
  expect_same_file("${WORK_DIR}/whole.safetensors" "${WORK_DIR}/resumed.safetensors")
  message("count_ones: resumed run identical to the uninterrupted one (200 steps, final checkpoint)")
elseif(MODE STREQUAL "deterministic")
  count_ones(one --steps 300)
  count_ones(two --steps 300)
  expect_same_file("${WORK_DIR}/one.csv" "${WORK_DIR}/two.csv")
  expect_same_file("${WORK_DIR}/one.safetensors" "${WORK_DIR}/two.safetensors")
  message("count_ones: two runs identical (loss curve, checkpoint)")
else()
  message(FATAL_ERROR "MODE must be resume or deterministic, got '${MODE}'")
endif()

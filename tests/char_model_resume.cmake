# Runs the char_model example three times: 300 steps in one go, and 150 steps resumed to
# 300, with dropout 0.2 between the layers. The two final checkpoints (model, optimiser
# slots, step, dropout generator) must be identical byte for byte, so a resumed run is the
# run that never stopped.
#
# Variables: CHAR_MODEL (the executable), WORK_DIR.
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(char_model name)
  execute_process(COMMAND "${CHAR_MODEL}" --hidden 32 --embedding 8 --batch 32 --dropout 0.2 --samples 0 --log-every 50
                          --checkpoint "${WORK_DIR}/${name}.safetensors" ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("--- char_model ${ARGN} (${name})\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "char_model (${name}) failed with ${rc}")
  endif()
endfunction()

char_model(whole --max-steps 300)
char_model(first --max-steps 150)
char_model(first --max-steps 300 --resume "${WORK_DIR}/first.safetensors")
execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${WORK_DIR}/whole.safetensors"
                        "${WORK_DIR}/first.safetensors" RESULT_VARIABLE differ)
if(differ)
  message(FATAL_ERROR "the resumed run's checkpoint differs from the uninterrupted run's")
endif()
message("char_model: resumed run identical to the uninterrupted one")

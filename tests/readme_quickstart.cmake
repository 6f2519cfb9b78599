# The README's first program must be examples/quickstart/main.cpp as it is (from its
# #include on), so that the program a reader copies is the one the tests build and run.
#
# Variables: SOURCE_DIR (the project).
cmake_minimum_required(VERSION 3.25)
file(READ "${SOURCE_DIR}/README.md" readme)
file(READ "${SOURCE_DIR}/examples/quickstart/main.cpp" program)
string(FIND "${program}" "#include <dynrnn/dynrnn.hpp>" start)
string(SUBSTRING "${program}" ${start} -1 body)
string(FIND "${readme}" "```cpp\n${body}```" found)
if(found EQUAL -1)
  message(FATAL_ERROR "README.md does not show examples/quickstart/main.cpp as it is; copy the program "
                      "(from its #include <dynrnn/dynrnn.hpp> on) into the README's first cpp block")
endif()
message("readme_quickstart: the README shows examples/quickstart/main.cpp")

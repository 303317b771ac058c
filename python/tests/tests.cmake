# Each test file is one ctest entry: pytest under Debian's interpreter with
# a per-test timeout.  pytest exits 5 when it collects nothing, which ctest
# counts as a failure.
file(GLOB TW_PY_TESTS CONFIGURE_DEPENDS
  ${CMAKE_CURRENT_SOURCE_DIR}/tests/test_*.py)
foreach(t ${TW_PY_TESTS})
  get_filename_component(n ${t} NAME_WE)
  string(REGEX REPLACE "^test_" "" n ${n})
  add_test(NAME py_${n}
    COMMAND ${Python3_EXECUTABLE} -m pytest -q -p no:cacheprovider
      --timeout=120 -o faulthandler_timeout=110 ${t}
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/tests)
  set_tests_properties(py_${n} PROPERTIES
    ENVIRONMENT "PYTHONPATH=${CMAKE_BINARY_DIR}/python;TAGWIRE_BIN=${CMAKE_BINARY_DIR}/tools/tagwire/tagwire;PYTHONDONTWRITEBYTECODE=1"
    TIMEOUT 600 LABELS python)
endforeach()

add_test(NAME py_pip_install
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/pip_install.sh
    ${PROJECT_SOURCE_DIR} ${Python3_EXECUTABLE})
set_tests_properties(py_pip_install PROPERTIES TIMEOUT 900 LABELS python
  SKIP_REGULAR_EXPRESSION "SKIP:")

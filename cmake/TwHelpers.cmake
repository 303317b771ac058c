# Helpers shared by every CMakeLists.txt of the project.

# tw_enable_sanitizers("address;undefined" | "thread" | "")
function(tw_enable_sanitizers list)
  if(list STREQUAL "")
    return()
  endif()
  string(REPLACE ";" "," joined "${list}")
  add_compile_options(-fsanitize=${joined} -fno-omit-frame-pointer
    -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${joined})
endfunction()

# tw_sources(file...): adds library sources (relative to the caller).
function(tw_sources)
  foreach(f ${ARGN})
    target_sources(tw_obj PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/${f})
  endforeach()
endfunction()

# The default ctest timeout of a test, in seconds.  The timeout of a test
# made by tw_test, this default or its own, is multiplied by the variable
# TW_TEST_TIMEOUT_MULTIPLIER as set when the build is configured (sanitizer
# builds are slower; the tests scale their own deadlines by the same
# variable when they run).
set(TW_TEST_TIMEOUT 60 CACHE STRING "per-test timeout in seconds")
set(TW_TEST_TIMEOUT_SCALE 1)
if("$ENV{TW_TEST_TIMEOUT_MULTIPLIER}" MATCHES "^[1-9][0-9]*$")
  set(TW_TEST_TIMEOUT_SCALE $ENV{TW_TEST_TIMEOUT_MULTIPLIER})
endif()

# tw_test(NAME name SOURCES src... [ARGS arg...] [TIMEOUT s] [LABELS l...])
# Builds `name` (once; later calls with the same NAME only register another
# ctest entry) and registers ctest entry `TESTNAME` (default NAME).
function(tw_test)
  cmake_parse_arguments(T "" "NAME;TESTNAME;TIMEOUT" "SOURCES;ARGS;LABELS"
    ${ARGN})
  if(NOT T_TESTNAME)
    set(T_TESTNAME ${T_NAME})
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT ${TW_TEST_TIMEOUT})
  endif()
  math(EXPR T_TIMEOUT "${T_TIMEOUT} * ${TW_TEST_TIMEOUT_SCALE}")
  if(NOT TARGET ${T_NAME})
    add_executable(${T_NAME} ${T_SOURCES})
    target_link_libraries(${T_NAME} PRIVATE tw_testing cmocka)
  endif()
  add_test(NAME ${T_TESTNAME} COMMAND ${T_NAME} ${T_ARGS})
  set_tests_properties(${T_TESTNAME} PROPERTIES TIMEOUT ${T_TIMEOUT}
    SKIP_RETURN_CODE 77 LABELS "${T_LABELS}")
endfunction()

# tw_failalloc(target): wraps malloc, calloc and realloc of a test binary at
# link time so that tests/failalloc.h can fail allocations on demand.
function(tw_failalloc target)
  target_sources(${target} PRIVATE ${PROJECT_SOURCE_DIR}/tests/failalloc.c)
  target_link_options(${target} PRIVATE -Wl,--wrap=malloc -Wl,--wrap=calloc
    -Wl,--wrap=realloc)
endfunction()

# tw_cmocka_cases(<var> <source> <macro>): the names of the cases listed in
# the `tests[]` array of a cmocka test source, each written `<macro>(name)`,
# into <var>.  A test registered one ctest entry per case takes its list
# from here, so that a case added to the array cannot be left out of ctest;
# the source is a configure dependency, so adding one reconfigures.
function(tw_cmocka_cases var source macro)
  set(path ${CMAKE_CURRENT_SOURCE_DIR}/${source})
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${path})
  file(READ ${path} text)
  string(FIND "${text}" "CMUnitTest tests[]" start)
  if(start EQUAL -1)
    message(FATAL_ERROR "${source}: no `CMUnitTest tests[]` array")
  endif()
  string(SUBSTRING "${text}" ${start} -1 text)
  string(FIND "${text}" "};" end)
  string(SUBSTRING "${text}" 0 ${end} text)
  string(REGEX MATCHALL "${macro}\\([A-Za-z0-9_]+\\)" found "${text}")
  set(names "")
  foreach(f ${found})
    string(REGEX REPLACE "^${macro}\\(([A-Za-z0-9_]+)\\)$" "\\1" n "${f}")
    list(APPEND names ${n})
  endforeach()
  if(names STREQUAL "")
    message(FATAL_ERROR "${source}: no ${macro}(name) cases in `tests[]`")
  endif()
  set(${var} ${names} PARENT_SCOPE)
endfunction()

# Unit tests of link descriptions: each file is one cmocka group and one
# ctest entry.  Both wrap the allocator at link time to drive their
# out-of-memory paths (tests/failalloc.h).

foreach(t desc env)
  tw_test(NAME ${t}_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/${t}_test.c
    TIMEOUT 60 LABELS unit)
  tw_failalloc(${t}_test)
endforeach()

tw_test(NAME rdv_wire_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/rdv_wire_test.c TIMEOUT 60 LABELS unit)

tw_test(NAME shml_wire_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/shml_wire_test.c TIMEOUT 60 LABELS unit)

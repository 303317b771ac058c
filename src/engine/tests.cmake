# Unit tests of the transfer engine: each file is one cmocka group and one
# ctest entry.

# The wire codec (wire.c): round trips, every rejection, random mutations.
tw_test(NAME engine_wire_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/wire_test.c
  TIMEOUT 60 LABELS unit)

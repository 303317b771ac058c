# Unit tests of the core layer: each file is one cmocka group and one
# ctest entry.

tw_test(NAME status_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/status_test.c
  TIMEOUT 30 LABELS unit)
tw_test(NAME names_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/names_test.c
  TIMEOUT 30 LABELS unit)
tw_test(NAME opts_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/opts_test.c
  TIMEOUT 30 LABELS unit)
# log_test re-executes itself (/proc/self/exe) to test the environment,
# since the level is read once per process.
tw_test(NAME log_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/log_test.c
  TIMEOUT 60 LABELS unit)
tw_test(NAME mailbox_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/mailbox_test.c
  TIMEOUT 120 LABELS "unit;threads")
# Out-of-memory paths: the test wraps the allocator at link time and fails
# allocations on demand (tests/failalloc.h).
tw_failalloc(mailbox_test)
tw_test(NAME nsset_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/nsset_test.c
  TIMEOUT 30 LABELS unit)
tw_test(NAME bufpool_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/bufpool_test.c
  TIMEOUT 60 LABELS "unit;threads")
tw_test(NAME clock_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/clock_test.c
  TIMEOUT 30 LABELS unit)
tw_test(NAME counters_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/counters_test.c
  TIMEOUT 60 LABELS "unit;threads")
tw_failalloc(counters_test)

# The engine between processes (engine_proc_test.c): byte-exact transfers
# of every size, peers killed with SIGKILL, four connectors at once, a link
# and an engine on one port, connections killed with ss -K, and three
# network namespaces.  One ctest entry per case; sanitizer builds get
# smaller sizes ("small").  Cases with heartbeats and time bounds, or ss -K
# (which matches ports by number) or namespaces, run alone.
if(TW_SANITIZE)
  set(engine_proc_size small)
else()
  set(engine_proc_size "")
endif()
set(engine_proc_src engine_proc_test.c
  ${PROJECT_SOURCE_DIR}/tests/tcpconn/proccount.c)
foreach(c exact_s1_w1 exact_s1_w16 exact_s4_w1 exact_s4_w16 fanin
    shared_port_engine_first shared_port_link_first)
  tw_test(NAME engine_proc_test TESTNAME engine_proc_${c}
    SOURCES ${engine_proc_src} ARGS ${c} ${engine_proc_size} TIMEOUT 120
    LABELS engine)
endforeach()
foreach(c sigkill_acceptor sigkill_connector sskill netns)
  tw_test(NAME engine_proc_test TESTNAME engine_proc_${c}
    SOURCES ${engine_proc_src} ARGS ${c} ${engine_proc_size} TIMEOUT 180
    LABELS engine)
  set_tests_properties(engine_proc_${c} PROPERTIES RUN_SERIAL TRUE)
endforeach()

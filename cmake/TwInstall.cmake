# Installation: the shared and the static library, the public headers, a
# pkg-config file and a CMake package config, so that a program finds
# tagwire either way:
#
#   cc app.c $(pkg-config --cflags --libs tagwire)
#
#   find_package(tagwire 0.1 REQUIRED)
#   target_link_libraries(app PRIVATE tagwire::tagwire)   # or ::tagwire_static
#
# Included last by the top-level CMakeLists.txt, once every target exists.

include(CMakePackageConfigHelpers)

set(TW_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/tagwire" CACHE STRING
  "where the CMake package config is installed, relative to the prefix")
set(TW_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig" CACHE STRING
  "where tagwire.pc is installed, relative to the prefix")

# The export set carries the targets' usage requirements: the include
# directory, Threads::Threads (PUBLIC) and, for the static library only, the
# PRIVATE TW_EXTRA_LIBS as $<LINK_ONLY:...>.  The shared library keeps its
# private dependencies to itself.
install(TARGETS tagwire tagwire_static
  EXPORT tagwireTargets
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})

# Only the public headers: everything under include/tagwire/.  Internal
# headers live in src/ and are never installed.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tagwire
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")

# The command-line tool installs itself (tools/tagwire/CMakeLists.txt).

install(EXPORT tagwireTargets
  NAMESPACE tagwire::
  FILE tagwireTargets.cmake
  DESTINATION ${TW_INSTALL_CMAKEDIR})

configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/tagwireConfig.cmake.in
  ${PROJECT_BINARY_DIR}/package/tagwireConfig.cmake
  INSTALL_DESTINATION ${TW_INSTALL_CMAKEDIR})
# Before 1.0 a minor release may break the API, hence SameMinorVersion.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/package/tagwireConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/package/tagwireConfig.cmake
  ${PROJECT_BINARY_DIR}/package/tagwireConfigVersion.cmake
  DESTINATION ${TW_INSTALL_CMAKEDIR})

# pkg-config.  The file is written at install time rather than at configure
# time, so that its prefix is the one the files really go to, also when it
# is chosen late with `cmake --install build --prefix DIR`.  Libs.private
# lists what a static link needs besides libtagwire.a.
set(TW_PC_LIBS_PRIVATE "-lpthread")
foreach(lib ${TW_EXTRA_LIBS})
  string(APPEND TW_PC_LIBS_PRIVATE " -l${lib}")
endforeach()
foreach(kind LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
    set(TW_PC_${kind} "${CMAKE_INSTALL_${kind}}")
  else()
    # Escaped twice: the text ${prefix} must survive into the .pc file.
    set(TW_PC_${kind} "\\\${prefix}/${CMAKE_INSTALL_${kind}}")
  endif()
endforeach()
install(CODE "
  set(prefix \"\${CMAKE_INSTALL_PREFIX}\")
  set(TW_PC_VERSION \"${PROJECT_VERSION}\")
  set(TW_PC_LIBDIR \"${TW_PC_LIBDIR}\")
  set(TW_PC_INCLUDEDIR \"${TW_PC_INCLUDEDIR}\")
  set(TW_PC_LIBS_PRIVATE \"${TW_PC_LIBS_PRIVATE}\")
  configure_file(\"${CMAKE_CURRENT_LIST_DIR}/tagwire.pc.in\"
    \"${PROJECT_BINARY_DIR}/package/tagwire.pc\" @ONLY)
")
install(FILES ${PROJECT_BINARY_DIR}/package/tagwire.pc
  DESTINATION ${TW_INSTALL_PKGCONFIGDIR})

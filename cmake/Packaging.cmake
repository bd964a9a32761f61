# Packaging.cmake: what `cmake --install` puts where, and the Debian packages
# CPack builds from it (issue 9; docs/packaging.md explains the layout).
#
#   cmake --install BUILD [--prefix /usr]     FHS install
#   cpack --config BUILD/CPackConfig.cmake -G DEB
#       -> tmlfleet_<ver>_<arch>.deb        tmld, tmlctl, tml-devsim, unit,
#                                           sysusers/tmpfiles, config, docs
#          libtmlagent-dev_<ver>_<arch>.deb libtmlagent + libtmlproto (.a),
#                                           headers, tmlagent.pc
#
# Every part is optional: a target or file that has not landed yet is skipped,
# so this file never breaks configuring the tree.
#
# Prefix-dependent files (the unit's ExecStart, tmlagent.pc, /etc vs
# PREFIX/etc) are generated at install time by cmake/tml_install.cmake, so the
# same build tree installs correctly with any --prefix and packages with /usr.
# GNUInstallDirs' rule applies: prefix /usr -> config in /etc; otherwise
# PREFIX/etc.

set(TML_PKG_DIR ${CMAKE_CURRENT_LIST_DIR})

# ---- binaries -------------------------------------------------------------
foreach(exe tmld tmlctl tml-devsim)
  if(TARGET ${exe})
    install(TARGETS ${exe} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
            COMPONENT gateway)
  endif()
endforeach()

# ---- agent library, codec, headers, pkg-config (libtmlagent-dev) ----------
set(TML_PC_LIBS "")
foreach(lib tmlagent tmlproto)
  if(TARGET ${lib})
    get_target_property(_type ${lib} TYPE)
    if(_type STREQUAL "STATIC_LIBRARY")
      install(TARGETS ${lib} ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
              COMPONENT dev)
      get_target_property(_out ${lib} OUTPUT_NAME)
      if(NOT _out)
        set(_out ${lib})
      endif()
      string(APPEND TML_PC_LIBS " -l${_out}")
    endif()
  endif()
endforeach()
foreach(inc proto/include firmware-agent/include)
  if(EXISTS ${PROJECT_SOURCE_DIR}/${inc}/tml)
    install(DIRECTORY ${PROJECT_SOURCE_DIR}/${inc}/tml
            DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev
            FILES_MATCHING PATTERN "*.h")
  endif()
endforeach()
# The codec's source list lets a firmware build system compile proto/ itself.
if(EXISTS ${PROJECT_SOURCE_DIR}/proto/PROTOCOL.md)
  install(FILES ${PROJECT_SOURCE_DIR}/proto/PROTOCOL.md
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/libtmlagent-dev
          COMPONENT dev)
endif()

# ---- docs, examples, man pages, completion ---------------------------------
install(FILES ${PROJECT_SOURCE_DIR}/README.md
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/tmlfleet COMPONENT gateway)
file(GLOB TML_DOCS ${PROJECT_SOURCE_DIR}/docs/*.md)
if(TML_DOCS)
  install(FILES ${TML_DOCS}
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/tmlfleet COMPONENT gateway)
endif()
# config/ as a tree (files and subfolders such as config/mosquitto/).
if(EXISTS ${PROJECT_SOURCE_DIR}/config)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/config/
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/tmlfleet/examples
          COMPONENT gateway)
endif()
# Man pages: tmld.8 (daemon/), tmlctl.1 (tools/tmlctl/), by their section.
file(GLOB_RECURSE TML_MANPAGES ${PROJECT_SOURCE_DIR}/docs/man/*.[1-8]
     ${PROJECT_SOURCE_DIR}/daemon/*.[1-8] ${PROJECT_SOURCE_DIR}/tools/*.[1-8])
foreach(m ${TML_MANPAGES})
  string(REGEX MATCH "[1-8]$" _sec ${m})
  install(FILES ${m} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${_sec}
          COMPONENT gateway)
endforeach()
file(GLOB_RECURSE TML_COMPLETIONS ${PROJECT_SOURCE_DIR}/tools/*.bash-completion)
foreach(c ${TML_COMPLETIONS})
  get_filename_component(_name ${c} NAME_WE)
  install(FILES ${c} DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/bash-completion/completions
          RENAME ${_name} COMPONENT gateway)
endforeach()

# ---- prefix-dependent files, generated at install time ---------------------
# The unit, sysusers/tmpfiles, /etc/tmld/tmld.conf and tmlagent.pc.
set(TML_CONF_EXAMPLE "")
if(EXISTS ${PROJECT_SOURCE_DIR}/config/tmld.conf.example)
  set(TML_CONF_EXAMPLE ${PROJECT_SOURCE_DIR}/config/tmld.conf.example)
endif()
install(CODE "
  set(TML_SRC \"${PROJECT_SOURCE_DIR}\")
  set(TML_STAGE \"${PROJECT_BINARY_DIR}\")
  set(TML_CONF_EXAMPLE \"${TML_CONF_EXAMPLE}\")
  set(TML_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(TML_COMPONENT gateway)
" COMPONENT gateway)
install(SCRIPT ${TML_PKG_DIR}/tml_install.cmake COMPONENT gateway)
if(NOT TML_PC_LIBS STREQUAL "")
  install(CODE "
    set(TML_SRC \"${PROJECT_SOURCE_DIR}\")
    set(TML_STAGE \"${PROJECT_BINARY_DIR}\")
    set(TML_PC_IN \"${TML_PKG_DIR}/tmlagent.pc.in\")
    set(TML_PC_LIBS \"${TML_PC_LIBS}\")
    set(TML_VERSION \"${PROJECT_VERSION}\")
    set(TML_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
    set(TML_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
    set(TML_COMPONENT dev)
  " COMPONENT dev)
  install(SCRIPT ${TML_PKG_DIR}/tml_install.cmake COMPONENT dev)
endif()

# ---- CPack: Debian packages --------------------------------------------------
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "tmlfleet")
set(CPACK_PACKAGE_VENDOR "tmlfleet")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "tmlfleet maintainers <maintainers@tmlfleet.invalid>")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
# Install with DESTDIR so that CMAKE_INSTALL_PREFIX is /usr while the install
# scripts run: they write paths (ExecStart, pkg-config prefix) into files.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX "/usr")
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "net")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://tmlfleet.invalid/")
set(CPACK_STRIP_FILES OFF)

# tmlfleet: the gateway. Depends = the shared libraries the binaries link
# (dpkg-shlibdeps) + mosquitto, which the unit wants and quickstart uses.
set(CPACK_DEBIAN_TMLFLEET_PACKAGE_NAME "tmlfleet")
set(CPACK_DEBIAN_TMLFLEET_DESCRIPTION
"TinyML fleet manager: gateway daemon and operator CLI
tmld runs on a Linux gateway (a Raspberry Pi or any Debian box), talks
MQTT/TLS through mosquitto to microcontrollers running libtmlagent, stores
their telemetry and sampled inputs in SQLite and rolls out signed models in
waves. tmlctl is the operator's command line; tml-devsim simulates devices.")
set(CPACK_DEBIAN_TMLFLEET_PACKAGE_DEPENDS "mosquitto")
set(CPACK_DEBIAN_TMLFLEET_PACKAGE_RECOMMENDS "systemd, mosquitto-clients")
set(CPACK_DEBIAN_TMLFLEET_PACKAGE_SHLIBDEPS ON)

# Conffiles: every file shipped under /etc/tmld (the deb's prefix is /usr, so
# /etc is the sysconfdir).
set(TML_DEB_CTRL ${PROJECT_BINARY_DIR}/deb-control)
file(MAKE_DIRECTORY ${TML_DEB_CTRL})
set(_conffiles "")
if(TML_CONF_EXAMPLE)
  string(APPEND _conffiles "/etc/tmld/tmld.conf\n")
endif()
file(WRITE ${TML_DEB_CTRL}/conffiles "${_conffiles}")
foreach(s postinst prerm postrm)
  configure_file(${TML_PKG_DIR}/deb/${s} ${TML_DEB_CTRL}/${s} COPYONLY
                 FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE
                 GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
endforeach()
set(CPACK_DEBIAN_TMLFLEET_PACKAGE_CONTROL_EXTRA
    ${TML_DEB_CTRL}/postinst ${TML_DEB_CTRL}/prerm ${TML_DEB_CTRL}/postrm)
if(TML_CONF_EXAMPLE)
  list(APPEND CPACK_DEBIAN_TMLFLEET_PACKAGE_CONTROL_EXTRA ${TML_DEB_CTRL}/conffiles)
endif()
set(CPACK_DEBIAN_TMLFLEET_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# libtmlagent-dev: static libraries, headers, pkg-config. No runtime deps.
set(CPACK_DEBIAN_AGENTDEV_PACKAGE_NAME "libtmlagent-dev")
set(CPACK_DEBIAN_AGENTDEV_PACKAGE_SECTION "libdevel")
set(CPACK_DEBIAN_AGENTDEV_DESCRIPTION
"TinyML fleet agent for device firmware (static library and headers)
libtmlagent is a freestanding C99, sans-IO agent (no heap, no OS) that
firmware links to report inference statistics, capture sampled inputs and
receive signed model updates from a tmlfleet gateway; libtmlproto is its
wire codec. Includes a pkg-config file (tmlagent.pc).")
set(CPACK_DEBIAN_AGENTDEV_PACKAGE_SHLIBDEPS OFF)

# CPack reads the variables above when it is included; components after it.
include(CPack)
cpack_add_component_group(tmlfleet)
cpack_add_component_group(agentdev)
cpack_add_component(gateway GROUP tmlfleet)
# Install rules written without COMPONENT elsewhere in the tree land in
# "Unspecified": ship them with the gateway rather than dropping them.
cpack_add_component(Unspecified GROUP tmlfleet)
cpack_add_component(dev GROUP agentdev)

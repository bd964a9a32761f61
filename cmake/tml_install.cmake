# tml_install.cmake: install-time part of cmake/Packaging.cmake.
#
# Runs inside cmake_install.cmake (so CMAKE_INSTALL_PREFIX is the prefix being
# installed to and $ENV{DESTDIR} is honoured by file(INSTALL)). The variables
# TML_* are set by an install(CODE) block right before this script. It writes
# the files whose content depends on the prefix:
#   gateway: systemd unit (ExecStart), sysusers.d, tmpfiles.d, tmld.conf
#   dev:     tmlagent.pc

set(_prefix "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/+$" "" _prefix "${_prefix}")
# GNUInstallDirs' sysconfdir rule: /usr -> /etc, /opt/X -> /etc/opt/X.
if(_prefix STREQUAL "/usr" OR _prefix STREQUAL "")
  set(_sysconf "/etc")
elseif(_prefix MATCHES "^/opt/")
  set(_sysconf "/etc${_prefix}")
else()
  set(_sysconf "${_prefix}/etc")
endif()
# Generated files are staged per destination, so that concurrent installs
# (cpack and a plain install from the same tree) never share a file.
string(MD5 _dest_id "$ENV{DESTDIR}|${_prefix}|${TML_COMPONENT}")
set(_stage "${TML_STAGE}/tml-install/${_dest_id}")

if(TML_COMPONENT STREQUAL "gateway")
  file(READ "${TML_SRC}/systemd/tmld.service" _unit)
  string(REPLACE "ExecStart=/usr/bin/tmld --config /etc/tmld/tmld.conf"
         "ExecStart=${_prefix}/${TML_BINDIR}/tmld --config ${_sysconf}/tmld/tmld.conf"
         _unit "${_unit}")
  string(REPLACE "file:///usr/share/doc/" "file://${_prefix}/share/doc/"
         _unit "${_unit}")
  file(MAKE_DIRECTORY "${_stage}")
  file(WRITE "${_stage}/tmld.service" "${_unit}")
  file(INSTALL DESTINATION "${_prefix}/lib/systemd/system" TYPE FILE
       FILES "${_stage}/tmld.service")
  file(INSTALL DESTINATION "${_prefix}/lib/sysusers.d" TYPE FILE
       RENAME tmlfleet.conf FILES "${TML_SRC}/systemd/tmlfleet.sysusers")
  file(INSTALL DESTINATION "${_prefix}/lib/tmpfiles.d" TYPE FILE
       RENAME tmlfleet.conf FILES "${TML_SRC}/systemd/tmlfleet.tmpfiles")
  if(TML_CONF_EXAMPLE)
    # Never overwrite an operator's config on a plain `cmake --install`; the
    # Debian package marks it a conffile and dpkg asks instead.
    if(EXISTS "$ENV{DESTDIR}${_sysconf}/tmld/tmld.conf")
      message(STATUS "Keeping existing: $ENV{DESTDIR}${_sysconf}/tmld/tmld.conf")
    else()
      file(INSTALL DESTINATION "${_sysconf}/tmld" TYPE FILE
           RENAME tmld.conf FILES "${TML_CONF_EXAMPLE}"
           PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
    endif()
  endif()
elseif(TML_COMPONENT STREQUAL "dev")
  set(TML_PC_PREFIX "${_prefix}")
  configure_file("${TML_PC_IN}" "${_stage}/tmlagent.pc" @ONLY)
  file(INSTALL DESTINATION "${_prefix}/${TML_LIBDIR}/pkgconfig" TYPE FILE
       FILES "${_stage}/tmlagent.pc")
endif()

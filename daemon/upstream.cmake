# daemon/upstream.cmake: link needs of the upstream module (daemon/upstream*.c,
# issue 8): libcurl for HTTPS and zlib for gzip'd batch bodies.
pkg_check_modules(UPSTREAM_CURL REQUIRED IMPORTED_TARGET libcurl)
pkg_check_modules(UPSTREAM_ZLIB REQUIRED IMPORTED_TARGET zlib)
target_link_libraries(tmld_core PUBLIC PkgConfig::UPSTREAM_CURL
  PkgConfig::UPSTREAM_ZLIB)

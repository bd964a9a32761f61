# proto/sources.cmake: the codec's sources and include directory, for any
# firmware build system that wants to compile proto/ without the rest of the
# tree (include() it, then use TML_PROTO_SOURCES and TML_PROTO_INCLUDE_DIR).
set(TML_PROTO_DIR ${CMAKE_CURRENT_LIST_DIR})
set(TML_PROTO_INCLUDE_DIR ${TML_PROTO_DIR}/include)
set(TML_PROTO_SOURCES
    ${TML_PROTO_DIR}/src/cbor_enc.c
    ${TML_PROTO_DIR}/src/cbor_dec.c
    ${TML_PROTO_DIR}/src/topic.c
    ${TML_PROTO_DIR}/src/names.c
    ${TML_PROTO_DIR}/src/msg.c
    ${TML_PROTO_DIR}/src/messages.c
    ${TML_PROTO_DIR}/src/tele.c
    ${TML_PROTO_DIR}/src/tele_v1.c
    ${TML_PROTO_DIR}/src/cose.c)

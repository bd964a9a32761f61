# firmware-agent/sources.cmake: the agent core's sources and include
# directory, for firmware build systems (include() it together with
# proto/sources.cmake; compile with -ffreestanding, C99).
set(TML_AGENT_DIR ${CMAKE_CURRENT_LIST_DIR})
set(TML_AGENT_INCLUDE_DIR ${TML_AGENT_DIR}/include)
set(TML_AGENT_SOURCES
    ${TML_AGENT_DIR}/src/agent.c
    ${TML_AGENT_DIR}/src/state.c
    ${TML_AGENT_DIR}/src/tele.c
    ${TML_AGENT_DIR}/src/sample.c
    ${TML_AGENT_DIR}/src/ota.c)

# Helpers that mirror the Bazel rules used in the BUILD.bazel files, so the CMake build
# keeps Bazel's layout: a binary or test of package `dir` lands in ${CMAKE_BINARY_DIR}/dir/
# (as in bazel-bin/dir/), and tests run from ${CMAKE_BINARY_DIR}, where the data files they
# read by workspace-relative path ("examples/mlp/mlp.textproto", "tools/pprun/pprun") are
# symlinked next to the built programs (the equivalent of Bazel's runfiles tree).

include_guard(GLOBAL)

# ppc_existing(<var> <files>...): the files (relative to the source root) that exist.
function(ppc_existing var)
  set(_found "")
  foreach(f ${ARGN})
    if(EXISTS ${PROJECT_SOURCE_DIR}/${f})
      list(APPEND _found ${f})
    endif()
  endforeach()
  set(${var} ${_found} PARENT_SCOPE)
endfunction()

# ppc_cc_library(<name> [SRCS <files>...] [DEPS <targets>...])
# A static library, or an INTERFACE library for a header-only cc_library.
function(ppc_cc_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  if(ARG_SRCS)
    add_library(${name} STATIC ${ARG_SRCS})
    target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  else()
    add_library(${name} INTERFACE)
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
  endif()
endfunction()

# ppc_cc_binary(<target> DIR <package> [OUTPUT_NAME <name>] SRCS <files>... [DEPS <targets>...])
# Built as ${CMAKE_BINARY_DIR}/<package>/<name> (default name: <target>).
function(ppc_cc_binary target)
  cmake_parse_arguments(ARG "" "DIR;OUTPUT_NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${target} ${ARG_SRCS})
  target_link_libraries(${target} PRIVATE ${ARG_DEPS})
  if(NOT ARG_OUTPUT_NAME)
    set(ARG_OUTPUT_NAME ${target})
  endif()
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME ${ARG_OUTPUT_NAME}
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/${ARG_DIR})
endfunction()

# ppc_pass_plugin(<target> DIR <package> OUTPUT_NAME <name> SRCS <files>... [DEFINES <defs>...])
# A pass plugin (compiler/pass_plugin.h), ${CMAKE_BINARY_DIR}/<package>/lib<name>.so, as
# //compiler:pass_plugin_api builds one: ppc's headers (and the generated
# ir/program.pb.h), Abseil's and protobuf's headers, and no library at all. Its undefined
# symbols resolve against the ppc that loads it (linked with ENABLE_EXPORTS).
function(ppc_pass_plugin target)
  cmake_parse_arguments(ARG "" "DIR;OUTPUT_NAME" "SRCS;DEFINES" ${ARGN})
  add_library(${target} MODULE ${ARG_SRCS})
  add_dependencies(${target} ir_program_proto)  # generates ir/program.pb.h
  target_include_directories(${target} PRIVATE
    $<TARGET_PROPERTY:absl::status,INTERFACE_INCLUDE_DIRECTORIES>
    $<TARGET_PROPERTY:protobuf::libprotobuf,INTERFACE_INCLUDE_DIRECTORIES>)
  target_compile_definitions(${target} PRIVATE ${ARG_DEFINES})
  set_target_properties(${target} PROPERTIES
    PREFIX lib
    SUFFIX .so
    OUTPUT_NAME ${ARG_OUTPUT_NAME}
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/${ARG_DIR})
endfunction()

# Bazel's timeouts per test size, as .bazelrc sets them (--test_timeout=300,900,1800,3600).
set(PPC_TIMEOUT_small 300)
set(PPC_TIMEOUT_medium 900)
set(PPC_TIMEOUT_large 1800)
set(PPC_TIMEOUT_enormous 3600)

# ppc_add_test(<name> DIR <package> [SIZE small|medium|large] [SHARDS n] COMMAND <cmd>...)
# Registers <cmd> with ctest the way `bazel test` runs it: from the runfiles root
# (${CMAKE_BINARY_DIR}), with a fresh private TEST_TMPDIR (and TMPDIR), the size's
# timeout, and SHARDS ctest entries (<name>_shard_i_of_n) for a sharded gtest.
# Labels: the package and the size (ctest -L tests, ctest -LE large).
function(ppc_add_test name)
  cmake_parse_arguments(ARG "" "DIR;SIZE;SHARDS" "COMMAND" ${ARGN})
  if(NOT ARG_SIZE)
    set(ARG_SIZE medium)  # cc_test's default size
  endif()
  if(NOT ARG_SHARDS)
    set(ARG_SHARDS 1)
  endif()
  string(REPLACE "/" ";" _labels "${ARG_DIR}")
  list(GET _labels 0 _label)
  foreach(i RANGE 1 ${ARG_SHARDS})
    set(_name ${name})
    set(_env "")
    if(ARG_SHARDS GREATER 1)
      set(_name ${name}_shard_${i}_of_${ARG_SHARDS})
      math(EXPR _index "${i} - 1")
      set(_env GTEST_TOTAL_SHARDS=${ARG_SHARDS} GTEST_SHARD_INDEX=${_index})
    endif()
    add_test(NAME ${_name}
      COMMAND sh ${PROJECT_SOURCE_DIR}/cmake/run_test.sh ${CMAKE_BINARY_DIR}/Testing/tmp/${_name} ${ARG_COMMAND}
      WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
    set_tests_properties(${_name} PROPERTIES
      TIMEOUT ${PPC_TIMEOUT_${ARG_SIZE}}
      LABELS "${_label};${ARG_SIZE}"
      ENVIRONMENT "${_env}")
  endforeach()
endfunction()

# ppc_cc_test(<name> DIR <package> SRCS <files>... [DEPS <targets>...] [SIZE s] [SHARDS n])
function(ppc_cc_test name)
  cmake_parse_arguments(ARG "" "DIR;SIZE;SHARDS" "SRCS;DEPS" ${ARGN})
  ppc_cc_binary(${name} DIR ${ARG_DIR} SRCS ${ARG_SRCS} DEPS ${ARG_DEPS})
  ppc_add_test(${name} DIR ${ARG_DIR} SIZE ${ARG_SIZE} SHARDS ${ARG_SHARDS} COMMAND $<TARGET_FILE:${name}>)
endfunction()

# ppc_sh_test(<name> DIR <package> SRC <script> [SIZE s] [ARGS <args>...])
function(ppc_sh_test name)
  cmake_parse_arguments(ARG "" "DIR;SIZE;SRC" "ARGS" ${ARGN})
  ppc_add_test(${name} DIR ${ARG_DIR} SIZE ${ARG_SIZE}
    COMMAND bash ${PROJECT_SOURCE_DIR}/${ARG_SRC} ${ARG_ARGS})
endfunction()

# ppc_runfiles(<path>...): symlinks each source file or directory <path> (relative to the
# source root) to the same relative path under ${CMAKE_BINARY_DIR}, where tests run.
function(ppc_runfiles)
  foreach(path ${ARGN})
    set(_src ${PROJECT_SOURCE_DIR}/${path})
    set(_dst ${CMAKE_BINARY_DIR}/${path})
    if(NOT EXISTS ${_src})
      continue()
    endif()
    if(IS_SYMLINK ${_dst})
      file(READ_SYMLINK ${_dst} _old)
      if(_old STREQUAL _src)
        continue()
      endif()
      file(REMOVE ${_dst})
    elseif(EXISTS ${_dst})
      file(REMOVE_RECURSE ${_dst})
    endif()
    get_filename_component(_dir ${_dst} DIRECTORY)
    file(MAKE_DIRECTORY ${_dir})
    file(CREATE_LINK ${_src} ${_dst} SYMBOLIC)
  endforeach()
endfunction()

# cmake -DOUT=<file.cc> -DSYMBOLS=<name>;... -DFILES=<path>;... -P embed_files.cmake
# Writes `extern const char <name>[] = R"PPC(\n<contents>)PPC";` for each pair, the same
# text as the embedded_gen genrule in examples/alexnet_cifar10/BUILD.bazel.
set(_text "")
foreach(_sym _file IN ZIP_LISTS SYMBOLS FILES)
  file(READ "${_file}" _contents)
  string(APPEND _text "extern const char ${_sym}[] = R\"PPC(\n${_contents})PPC\";\n")
endforeach()
file(WRITE "${OUT}.tmp" "${_text}")
configure_file("${OUT}.tmp" "${OUT}" COPYONLY)  # leaves an unchanged file untouched
file(REMOVE "${OUT}.tmp")

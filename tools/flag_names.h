// Lets users write --micro-batches as well as --micro_batches: Abseil flags only know
// the underscore spelling, so dashes in a flag's name (not its value) become underscores.
#ifndef PPC_TOOLS_FLAG_NAMES_H_
#define PPC_TOOLS_FLAG_NAMES_H_

#include <cstring>
#include <string>
#include <vector>

namespace ppc {

// Rewrites argv in place; the strings live in `storage`.
inline void NormalizeFlagNames(int argc, char** argv, std::vector<std::string>& storage) {
  storage.assign(argv, argv + argc);
  for (int i = 1; i < argc; ++i) {
    std::string& a = storage[i];
    if (a == "--") break;
    if (a.size() > 2 && a[0] == '-' && a[1] == '-') {
      size_t end = a.find('=');
      if (end == std::string::npos) end = a.size();
      for (size_t k = 2; k < end; ++k)
        if (a[k] == '-') a[k] = '_';
    }
    argv[i] = storage[i].data();
  }
}

}  // namespace ppc

#endif  // PPC_TOOLS_FLAG_NAMES_H_

// Lets users write --micro-batches as well as --micro_batches: Abseil flags only know
// the underscore spelling, so dashes in a flag's name (not its value) become underscores.
#ifndef PPC_TOOLS_FLAG_NAMES_H_
#define PPC_TOOLS_FLAG_NAMES_H_

#include <cctype>
#include <cstring>
#include <set>
#include <string>
#include <vector>

namespace ppc {

// Rewrites argv in place; the strings live in `storage`. Returns an error message (empty
// when the command line is fine) for what Abseil would quietly accept: a flag given twice
// (the last would win) and an empty argument or flag value (it would mean "not given").
inline std::string NormalizeFlagNames(int argc, char** argv, std::vector<std::string>& storage) {
  storage.assign(argv, argv + argc);
  std::set<std::string> seen;
  std::string error;
  bool flags_done = false;
  std::string previous_flag;  // a flag without "=value": the next argument may be its value
  for (int i = 1; i < argc; ++i) {
    std::string& a = storage[i];
    argv[i] = a.data();
    if (flags_done) continue;
    if (a == "--") {
      flags_done = true;
      continue;
    }
    if (a.empty() && error.empty()) {
      error = previous_flag.empty() ? "argument " + std::to_string(i) + " is empty" : "--" + previous_flag + " is empty";
    }
    previous_flag.clear();
    // A flag: -name or --name, [=value]; "-5" or "-1e3" is a (negative) value, not a flag.
    const size_t dashes = a.rfind("--", 0) == 0 ? 2 : a.rfind("-", 0) == 0 ? 1 : 0;
    if (dashes == 0 || a.size() == dashes || !std::isalpha(static_cast<unsigned char>(a[dashes]))) continue;
    size_t end = a.find('=');
    if (end == std::string::npos) end = a.size();
    const std::string shown = a.substr(dashes, end - dashes);  // as typed, for messages
    for (size_t k = dashes; k < end; ++k)
      if (a[k] == '-') a[k] = '_';
    argv[i] = a.data();
    const std::string name = a.substr(dashes, end - dashes);
    if (end + 1 == a.size() && error.empty()) error = "--" + shown + " is empty";
    if (end == a.size()) previous_flag = shown;
    if (name.rfind("no", 0) == 0 && name.size() > 2) {
      // --noflag is a boolean flag's false; it collides with --flag.
      if (seen.count(name.substr(2)) && error.empty()) error = "--" + shown.substr(2) + " is given twice";
      seen.insert(name.substr(2));
    }
    if (!seen.insert(name).second && error.empty()) error = "--" + shown + " is given twice";
  }
  return error;
}

}  // namespace ppc

#endif  // PPC_TOOLS_FLAG_NAMES_H_

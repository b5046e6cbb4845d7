/* Force-included (-include) into every mlx-c translation unit and into bindgen.
 * Written for mlxtune; it fills two gaps of mlx-c 0.7.0 on x86-64 Linux. */
#ifndef MLXTUNE_COMPAT_H
#define MLXTUNE_COMPAT_H

/* 1. mlx-c's half.h only defines float16_t/bfloat16_t (and with them the
 * item/data accessors mlx-rs always calls) on aarch64. Elsewhere give them
 * 16-bit storage types: the accessors only move bits. */
#if !defined(__aarch64__) && !defined(__ARM_FEATURE_FP16_SCALAR_ARITHMETIC)
#include <stdint.h>
#define HAS_FLOAT16
#define HAS_BFLOAT16
typedef uint16_t float16_t;
typedef uint16_t bfloat16_t;
#endif

/* 2. mlx-c formats a few error messages with std::format, which GCC 12's
 * libstdc++ lacks. A "{}"-only replacement is enough for those messages. */
#ifdef __cplusplus
#include <version>
#if !defined(__cpp_lib_format)
#include <sstream>
#include <string>
#include <string_view>
namespace std {
inline void mlxtune_format_rest(std::ostringstream& out, std::string_view fmt) {
  out << fmt;
}
template <class T, class... Rest>
void mlxtune_format_rest(std::ostringstream& out, std::string_view fmt, const T& first, const Rest&... rest) {
  auto at = fmt.find("{}");
  if (at == std::string_view::npos) {
    out << fmt;
    return;
  }
  out << fmt.substr(0, at) << first;
  mlxtune_format_rest(out, fmt.substr(at + 2), rest...);
}
template <class... Args>
std::string format(std::string_view fmt, const Args&... args) {
  std::ostringstream out;
  mlxtune_format_rest(out, fmt, args...);
  return out.str();
}
}  // namespace std
#endif
#endif

#endif

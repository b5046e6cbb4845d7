/* mlx-rs seeds its default RNG from macOS's mach_approximate_time(); on Linux
 * these answer from CLOCK_MONOTONIC in nanoseconds (timebase 1/1). */
#include <stdint.h>
#include <time.h>

static uint64_t mlxtune_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t mach_absolute_time(void) { return mlxtune_now_ns(); }
uint64_t mach_approximate_time(void) { return mlxtune_now_ns(); }
uint64_t mach_continuous_time(void) { return mlxtune_now_ns(); }
uint64_t mach_continuous_approximate_time(void) { return mlxtune_now_ns(); }

struct mlxtune_timebase { uint32_t numer; uint32_t denom; };
int mach_timebase_info(struct mlxtune_timebase* info) {
  info->numer = 1;
  info->denom = 1;
  return 0;
}

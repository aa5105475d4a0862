#include "drivers/kvp/kvp_auto.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace vbus::ic {
namespace {

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  std::string host = name;
  if (host.find('.') != std::string::npos) return host;
  std::ifstream resolv("/etc/resolv.conf");
  std::string line;
  while (std::getline(resolv, line)) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "domain ") || absl::ConsumePrefix(&rest, "search ")) {
      std::vector<absl::string_view> words = absl::StrSplit(rest, ' ', absl::SkipEmpty());
      if (!words.empty()) return absl::StrCat(host, ".", words[0]);
    }
  }
  return host;
}

void Addresses(std::string* v4, std::string* v6) {
  std::vector<std::string> four;
  std::vector<std::string> six;
  struct ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return;
  for (struct ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr) continue;
    char text[INET6_ADDRSTRLEN] = {};
    if (a->ifa_addr->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const struct sockaddr_in*>(a->ifa_addr);
      if (ntohl(in->sin_addr.s_addr) >> 24 == 127) continue;
      if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) != nullptr) four.push_back(text);
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      const auto* in = reinterpret_cast<const struct sockaddr_in6*>(a->ifa_addr);
      if (IN6_IS_ADDR_LOOPBACK(&in->sin6_addr)) continue;
      if (inet_ntop(AF_INET6, &in->sin6_addr, text, sizeof(text)) != nullptr) six.push_back(text);
    }
  }
  freeifaddrs(list);
  *v4 = absl::StrJoin(four, ";");
  *v6 = absl::StrJoin(six, ";");
}

std::string OsName(const std::string& fallback) {
  std::ifstream release("/etc/os-release");
  std::string line;
  while (std::getline(release, line)) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "PRETTY_NAME=")) {
      absl::ConsumePrefix(&rest, "\"");
      absl::ConsumeSuffix(&rest, "\"");
      return std::string(rest);
    }
  }
  return fallback;
}

}  // namespace

std::vector<KvpRecord> CollectAutoPool() {
  struct utsname u = {};
  const bool have_uname = uname(&u) == 0;
  const std::string release = have_uname ? u.release : "";
  std::vector<std::string> numbers = absl::StrSplit(release, absl::ByAnyChar(".-"));
  std::string v4;
  std::string v6;
  Addresses(&v4, &v6);
  const std::string values[] = {
      HostName(),
      kVbusIntegrationVersion,
      v4,
      v6,
      release,
      OsName(have_uname ? u.sysname : ""),
      !numbers.empty() ? numbers[0] : "",
      numbers.size() > 1 ? numbers[1] : "",
      have_uname ? u.version : "",
      have_uname ? u.machine : "",
  };
  std::vector<KvpRecord> pool;
  for (size_t i = 0; i < std::size(kKvpAutoKeys); ++i) {
    pool.push_back({kKvpString, kKvpAutoKeys[i], values[i].substr(0, kKvpMaxValueChars)});
  }
  return pool;
}

}  // namespace vbus::ic

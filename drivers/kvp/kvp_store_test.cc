#include "drivers/kvp/kvp_store.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace vbus::ic {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
  std::remove(path.c_str());
  return path;
}

TEST(KvpStoreTest, MemoryStoreKeepsOrderReplacesAndLimits) {
  MemoryKvpStore store(2);
  ASSERT_TRUE(store.Set(0, {kKvpString, "a", "1"}).ok());
  ASSERT_TRUE(store.Set(0, {kKvpString, "b", "2"}).ok());
  ASSERT_TRUE(store.Set(0, {kKvpString, "a", "3"}).ok());  // in place
  EXPECT_EQ(store.Set(0, {kKvpString, "c", "4"}).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*store.At(0, 0))->value, "3");
  EXPECT_EQ((*store.At(0, 1))->key, "b");
  EXPECT_FALSE(store.At(0, 2)->has_value());
  EXPECT_FALSE(store.Get(1, "a")->has_value());  // pools are separate
  EXPECT_EQ(store.Delete(0, "zz").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store.Delete(0, "a").ok());
  EXPECT_EQ((*store.At(0, 0))->key, "b");
  EXPECT_EQ(store.Get(5, "a").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvpStoreTest, FileStoreSurvivesReopening) {
  const std::string path = TempPath("kvp_pools");
  {
    absl::StatusOr<std::unique_ptr<FileKvpStore>> store = FileKvpStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Set(0, {kKvpString, "tab\tkey", "line\nvalue"}).ok());
    ASSERT_TRUE((*store)->Set(1, {kKvpU32, "n", "7"}).ok());
    ASSERT_TRUE((*store)->Set(0, {kKvpString, "gone", "x"}).ok());
    ASSERT_TRUE((*store)->Delete(0, "gone").ok());
  }
  absl::StatusOr<std::unique_ptr<FileKvpStore>> again = FileKvpStore::Open(path);
  ASSERT_TRUE(again.ok()) << again.status();
  std::vector<KvpRecord> external = (*again)->List(0);
  ASSERT_EQ(external.size(), 1u);
  EXPECT_EQ(external[0], (KvpRecord{kKvpString, "tab\tkey", "line\nvalue"}));
  EXPECT_EQ((*again)->List(1), (std::vector<KvpRecord>{{kKvpU32, "n", "7"}}));
  // No temporary file is left behind.
  EXPECT_FALSE(std::ifstream(path + ".tmp").is_open());
}

TEST(KvpStoreTest, FailedWriteLeavesStoreAndFileUnchanged) {
  const std::string path = TempPath("no_such_dir/kvp_pools");
  absl::StatusOr<std::unique_ptr<FileKvpStore>> store = FileKvpStore::Open(path);
  ASSERT_TRUE(store.ok());
  EXPECT_FALSE((*store)->Set(0, {kKvpString, "a", "1"}).ok());
  EXPECT_TRUE((*store)->List(0).empty());
}

TEST(KvpStoreTest, CorruptFileIsRefusedNamingTheLine) {
  const std::string path = TempPath("kvp_corrupt");
  {
    std::ofstream out(path);
    out << "0\t1\tk\tv\n9\t1\tk\tv\n";
  }
  absl::StatusOr<std::unique_ptr<FileKvpStore>> store = FileKvpStore::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(store.status().message().find("line 2"), std::string::npos) << store.status();
}

}  // namespace
}  // namespace vbus::ic

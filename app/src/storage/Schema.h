// The database schema as an ordered list of migrations. Version N's SQL turns a version N-1 database
// into a version N one; a fresh file runs all of them in order. Shipped migrations are frozen: never
// edit one, add a new version instead (tests/app/storage_test.cpp keeps a verbatim copy of each and
// fails when they differ).
#pragma once

#include <vector>

struct Migration {
  int version = 0;           // the PRAGMA user_version this migration leaves behind (1, 2, ...)
  const char* sql = nullptr; // one or more statements, run inside a single transaction
  // True when the migration rewrites or drops existing data (table rebuilds, dropped tables or
  // indexes). Database backs the file up before running one on a database that has data.
  bool destructive = false;
};

// All migrations the app knows, ascending by version, contiguous from 1.
const std::vector<Migration>& builtinMigrations();

// The schema version this build writes (= builtinMigrations().back().version).
int latestSchemaVersion();

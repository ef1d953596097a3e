// The few functions of SQLite's C API (https://sqlite.org/c3ref/) the benchmark calls, declared
// here so the benchmark builds against the system's libsqlite3.so.0 without its -dev headers
// (the Swift root on Linux has the library but no sqlite3.h). Signatures as in sqlite3.h.
#pragma once
#include <stdint.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
typedef void (*sqlite3_destructor_type)(void *);

#define SQLITE_OK 0
#define SQLITE_ROW 100
#define SQLITE_DONE 101
/// SQLITE_TRANSIENT: SQLite copies the bound text before the call returns.
#define CSQLITE_TRANSIENT ((sqlite3_destructor_type)-1)

int sqlite3_open(const char *filename, sqlite3 **db);
int sqlite3_close(sqlite3 *db);
int sqlite3_exec(sqlite3 *db, const char *sql, int (*callback)(void *, int, char **, char **), void *arg,
                 char **errmsg);
const char *sqlite3_errmsg(sqlite3 *db);
int sqlite3_prepare_v2(sqlite3 *db, const char *sql, int nbytes, sqlite3_stmt **stmt, const char **tail);
int sqlite3_bind_int64(sqlite3_stmt *stmt, int index, int64_t value);
int sqlite3_bind_double(sqlite3_stmt *stmt, int index, double value);
int sqlite3_bind_text(sqlite3_stmt *stmt, int index, const char *text, int nbytes, sqlite3_destructor_type destructor);
int sqlite3_step(sqlite3_stmt *stmt);
int sqlite3_reset(sqlite3_stmt *stmt);
int sqlite3_finalize(sqlite3_stmt *stmt);
int64_t sqlite3_column_int64(sqlite3_stmt *stmt, int column);
double sqlite3_column_double(sqlite3_stmt *stmt, int column);
const unsigned char *sqlite3_column_text(sqlite3_stmt *stmt, int column);
int sqlite3_column_bytes(sqlite3_stmt *stmt, int column);
const char *sqlite3_libversion(void);

static inline sqlite3_destructor_type csqlite_transient(void) { return CSQLITE_TRANSIENT; }

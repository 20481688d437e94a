# Turns db/migrations/NNN_name.sql into a C source of byte arrays.
#
# Run as: cmake -DMIGRATIONS_DIR=<dir> -DOUTPUT=<file.c> -P embed_migrations.cmake
#
# Versions must run 1, 2, 3, ... without gaps or duplicates, so that two
# branches adding the same number fail the build instead of one migration
# being skipped silently on some databases.
cmake_minimum_required(VERSION 3.16)

if(NOT MIGRATIONS_DIR OR NOT OUTPUT)
  message(FATAL_ERROR "embed_migrations: MIGRATIONS_DIR and OUTPUT are required")
endif()

file(GLOB files RELATIVE "${MIGRATIONS_DIR}" "${MIGRATIONS_DIR}/*.sql")
list(SORT files)
if(NOT files)
  message(FATAL_ERROR "embed_migrations: no migration in \"${MIGRATIONS_DIR}\"")
endif()

set(arrays "")
set(entries "")
set(expected 1)
foreach(f IN LISTS files)
  if(NOT f MATCHES "^([0-9][0-9][0-9])_([a-z0-9_]+)\\.sql$")
    message(FATAL_ERROR "embed_migrations: \"${f}\" is not named NNN_name.sql "
                        "(three digits, lower-case letters, digits, underscores)")
  endif()
  set(name "${CMAKE_MATCH_1}_${CMAKE_MATCH_2}")
  math(EXPR version "${CMAKE_MATCH_1}")
  if(NOT version EQUAL expected)
    message(FATAL_ERROR "embed_migrations: \"${f}\" has version ${version}, "
                        "expected ${expected} (versions run 1, 2, 3, ... once each)")
  endif()
  math(EXPR expected "${expected} + 1")

  file(READ "${MIGRATIONS_DIR}/${f}" hex HEX)
  if(hex MATCHES "^(..)*00")
    message(FATAL_ERROR "embed_migrations: \"${f}\" contains a NUL byte")
  endif()
  string(LENGTH "${hex}" hexlen)
  math(EXPR len "${hexlen} / 2")
  # 16 bytes a line, then each byte as 0xNN.
  string(REPEAT "[0-9a-f]" 32 line_re)
  string(REGEX REPLACE "(${line_re})" "\\1\n\t" hex "${hex}")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1, " hex "${hex}")
  string(REGEX REPLACE " \n" "\n" hex "${hex}")
  string(APPEND arrays
         "/* ${f} */\nstatic const unsigned char m${version}[${len} + 1] = {\n\t${hex}0x00\n};\n\n")
  string(APPEND entries "\t{${version}, \"${name}\", (const char *)m${version}, ${len}},\n")
endforeach()

math(EXPR count "${expected} - 1")
set(content "/* Generated from db/migrations/NNN_name.sql by db/cmake/embed_migrations.cmake.
 * Do not edit: edit or add a migration instead. */
#include \"migrations.h\"

${arrays}const pn_migration pn_migrations[] = {
${entries}};

const size_t pn_migrations_count = ${count};
")

# Rewrite only when something changed, so a touched-but-equal .sql file
# does not recompile anything.
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
  if(old STREQUAL content)
    file(TOUCH_NOCREATE "${OUTPUT}")
    return()
  endif()
endif()
file(WRITE "${OUTPUT}" "${content}")

/*
 * migrations.h: the schema migrations embedded into tmld (generated from
 * db/NNNN_name.sql by db/embed.cmake), sorted by version.
 */
#ifndef TMLD_MIGRATIONS_H
#define TMLD_MIGRATIONS_H

#include <stddef.h>

struct tmld_migration {
    int version;      /* NNNN of the file name */
    const char *name; /* "0001_init" */
    const char *sql;  /* the file's text */
};

extern const struct tmld_migration tmld_migrations[];
extern const size_t tmld_n_migrations;

#endif /* TMLD_MIGRATIONS_H */

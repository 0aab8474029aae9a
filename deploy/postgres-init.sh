#!/usr/bin/env bash
# orderd's PostgreSQL roles, created once when the postgres container
# initialises its data directory (docker-compose.yml mounts this file in
# /docker-entrypoint-initdb.d; it does not run on an existing volume).
#
#   orderd_migrate  owns the database and its schema: `orderd migrate` runs
#                   as it (POSTGRES_MIGRATE_PASSWORD)
#   orderd          the service (api, worker): reads and writes the rows of
#                   the tables orderd_migrate creates, and nothing else: no
#                   DDL, not a superuser (POSTGRES_APP_PASSWORD)
#
# The superuser (POSTGRES_USER, POSTGRES_PASSWORD) is used by nothing but
# this script and the healthcheck. The entrypoint has created POSTGRES_DB
# and runs this with psql reaching its temporary server; the test
# (cmd/orderd/pgroles_test.go) runs it the same way against a private
# server, through PGHOST and PGPORT.
set -euo pipefail

: "${POSTGRES_APP_PASSWORD:?set POSTGRES_APP_PASSWORD}"
: "${POSTGRES_MIGRATE_PASSWORD:?set POSTGRES_MIGRATE_PASSWORD}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-orderd}" \
  -v db="${POSTGRES_DB:-orderd}" \
  -v app_password="$POSTGRES_APP_PASSWORD" \
  -v migrate_password="$POSTGRES_MIGRATE_PASSWORD" <<'SQL'
CREATE ROLE orderd_migrate LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'migrate_password';
CREATE ROLE orderd LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_password';

-- The migrations' role owns the database, and so (PostgreSQL 15) its
-- public schema, whose owner is pg_database_owner.
ALTER DATABASE :"db" OWNER TO orderd_migrate;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO orderd;

\connect :"db"
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO orderd;
-- What the migrations create, the service may read and write.
ALTER DEFAULT PRIVILEGES FOR ROLE orderd_migrate IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO orderd;
ALTER DEFAULT PRIVILEGES FOR ROLE orderd_migrate IN SCHEMA public
  GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO orderd;
SQL

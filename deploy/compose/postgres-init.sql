-- One database per service (DESIGN.md: nobody reads another service's tables), all owned by
-- the compose user (POSTGRES_USER). Runs once, when the postgres-data volume is empty.
CREATE DATABASE registry;
CREATE DATABASE training;
CREATE DATABASE conversion;
CREATE DATABASE inference;

# PostgreSQL 15 from Debian's package, on the same bookworm base as the dnc image: one
# server, one database per service (docker/postgres-entrypoint.sh), password auth.
#   docker build -f docker/postgres.Dockerfile -t dnc-postgres:latest docker
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
# No cluster from the package's post-install: the entrypoint creates it in the volume.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/dnc.conf \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       postgresql-15 >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
USER postgres
EXPOSE 5432
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
# Last (metadata only, no cache cost): build.sh removes this stack's untagged old images.
LABEL org.dnc.stack=true

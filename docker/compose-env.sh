#!/usr/bin/env sh
# Prints the BUSWAY_* variables pointing the tests at the brokers of docker/compose.yaml.
cat <<'VARS'
export BUSWAY_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f
export BUSWAY_KAFKA_BOOTSTRAP=127.0.0.1:9092
export BUSWAY_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export BUSWAY_POSTGRES_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres
export BUSWAY_REDIS_URL=redis://127.0.0.1:6379
export BUSWAY_SERVICEBUS_CONNECTION_STRING="Endpoint=sb://127.0.0.1:5673;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
VARS

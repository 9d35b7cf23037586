# pfgate: one image for the gateway, the node agent, the CLI and the demo pods.
FROM node:20-bookworm-slim
# nsenter (util-linux) and iproute2 for the agent's network-namespace dialer.
RUN apt-get update && apt-get install -y --no-install-recommends iproute2 util-linux \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/pfgate
COPY package.json package-lock.json tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY test ./test
COPY bench ./bench
RUN npm ci --no-audit --no-fund && npm prune --omit=dev
# --single-threaded-gc: src/shared/node-flags.ts (+20 % throughput on 2 cores).
ENTRYPOINT ["node", "--single-threaded-gc", "/opt/pfgate/bin/pfgate.js"]
CMD ["help"]

// A small Node.js application for riis's HttpPlatformHandler: it listens
// on the port riis gives it in HTTP_PLATFORM_PORT, on the loopback
// address, and answers with what it was asked and who asked.
"use strict";
const http = require("http");

const port = Number(process.env.HTTP_PLATFORM_PORT);
if (!port) {
  console.error("HTTP_PLATFORM_PORT is not set: run me from riis");
  process.exit(1);
}

const server = http.createServer((request, response) => {
  const body = JSON.stringify(
    {
      method: request.method,
      url: request.url,
      host: request.headers.host,
      forwardedFor: request.headers["x-forwarded-for"] || null,
      greeting: process.env.GREETING || null,
      pid: process.pid,
    },
    null,
    2
  );
  response.writeHead(200, { "Content-Type": "application/json" });
  response.end(body + "\n");
});

server.listen(port, "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${port}`);
});

// riis stops its applications with SIGTERM.
process.on("SIGTERM", () => server.close(() => process.exit(0)));

<?php
// The default document: what PHP got from riis.
header('Content-Type: text/plain; charset=utf-8');
echo "Hello from PHP ", PHP_VERSION, " behind ", $_SERVER['SERVER_SOFTWARE'], "\n\n";
foreach (['REQUEST_METHOD', 'REQUEST_URI', 'SCRIPT_NAME', 'QUERY_STRING', 'REMOTE_ADDR', 'HTTPS'] as $name) {
    echo $name, ' = ', $_SERVER[$name] ?? '', "\n";
}

<?php
// Streams one line a second for five seconds (the /live location sends
// each flush at once).
header('Content-Type: text/plain; charset=utf-8');
while (ob_get_level()) {
    ob_end_flush();
}
for ($i = 0; $i < 5; $i++) {
    echo date('H:i:s'), "\n";
    flush();
    sleep(1);
}

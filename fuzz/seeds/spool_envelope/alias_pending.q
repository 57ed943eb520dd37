{"version":2,"message_len":26,"id":"0190f3c2a1b2c30000000a1b2c3d4e5f60","arrival":1700000000,"original_sender":"alice@example.org","sender":"john+SRS=K7QZ2M4D=2W=example.org=alice@forward.example","recipients":[{"address":"john@home.example","original":"john@forward.example","state":"pending","last_error":null,"remote":null,"notify":"FAILURE,DELAY"}],"client":{"ip":"192.0.2.7","helo":"mail.example.org","tls":"TLSv1.3 TLS13_AES_256_GCM_SHA384"},"attempts":0,"next_attempt":1700000000,"size":1234,"env_id":null,"ret_full":false}
Subject: seed

body
.

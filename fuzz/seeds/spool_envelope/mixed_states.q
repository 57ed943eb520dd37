{"version":2,"message_len":26,"id":"0190f3c2a1b2c30000000a1b2c3d4e5f60","arrival":1700000000,"original_sender":"","sender":"","recipients":[{"address":"a@home.example","original":"team@forward.example","state":"delivered","last_error":"250 2.0.0 queued","remote":"mx.home.example","notify":null},{"address":"b@home.example","original":"team@forward.example","state":"failed","last_error":"550 5.1.1 ünknown \"user\"","remote":"mx.home.example"}],"client":{"ip":"2001:db8::1","helo":"[IPv6:2001:db8::1]","tls":null},"attempts":3,"next_attempt":18446744073709551615,"size":0,"env_id":"QQ+2Bx","ret_full":true,"unknown_later_field":[1,2,{"x":null}]}
Subject: seed

body
.

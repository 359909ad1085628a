module github.com/machinery-bridge/compat/gocraft

go 1.22

require (
	github.com/gocraft/work v0.5.1
	github.com/gomodule/redigo v1.9.2
)

require (
	github.com/braintree/manners v0.0.0-20150503212558-0b5e6b2c2843 // indirect
	github.com/gocraft/web v0.0.0-20190207150652-9707327fb69b // indirect
	github.com/robfig/cron v1.2.0 // indirect
)

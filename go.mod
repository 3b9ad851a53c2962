module github.com/svcplan/svcplan

go 1.26

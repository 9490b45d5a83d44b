select l_commitdate, sum(l_quantity)
from lineitem
group by l_commitdate
order by sum(l_quantity) desc, l_commitdate
limit 100;
